"""The generation engine: one loaded llama.cpp model behind a narrow interface.

`Engine.submit(request)` returns a `Generation`; its `events()` streams `TextDelta`s and ends
with one `Finished`; `abort()` (safe from any thread) stops it within one token. The token loop
is our own, on top of `Llama.generate`, because it is the only way to count real tokens, stop
within a token, force a response prefix and keep llama.cpp's prefix reuse across turns. Keeping
this interface narrow lets a later engine decode several conversations in one batch without
touching the web side.

One `Llama` must never be used by two threads: an engine runs one generation at a time.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import llama_cpp
import numpy
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from chat.grammar import GrammarError
from inference.sampling import Sampling
from inference.text import TextAssembler

# Used when a model's GGUF has no chat template: ChatML, what most small chat models speak.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class GenerationAborted(Exception):
    """Stopped before its first token (while its prompt was being measured)."""


class PromptTooLong(Exception):
    """The prompt leaves no room for an answer in the model's context window."""

    def __init__(self, prompt_tokens: int, n_ctx: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
        super().__init__(
            f"The prompt is {prompt_tokens} tokens but the model's context holds {n_ctx}; "
            f"shorten it by at least {prompt_tokens - n_ctx + 1} tokens or start a new "
            "conversation."
        )


@dataclass(frozen=True)
class GenerationRequest:
    """A chat (`messages`, formatted by the model's template) or a raw `prompt`."""

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    sampling: Sampling = field(default_factory=Sampling)


@dataclass(frozen=True)
class Trimmed:
    """Earlier turns left out so that the prompt fits the context window."""

    turns: int
    tokens: int


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    content: str
    finish_reason: str  # stop, length, aborted
    prompt_tokens: int
    completion_tokens: int
    prompt_ms: float
    generation_ms: float
    seed: int
    cached_tokens: int = 0  # leading prompt tokens reused from the previous generation
    trimmed: Trimmed | None = None

    @property
    def tokens_per_s(self) -> float:
        if self.generation_ms <= 0:
            return 0.0
        return self.completion_tokens / (self.generation_ms / 1000)


Event = TextDelta | Finished


def grammar_sampler_check(vocab: object, grammar: str) -> None:
    """Build the grammar's sampler once against a model's vocabulary and free it.

    llama.cpp answers a grammar it refuses with a null sampler, which llama-cpp-python would
    use and crash the worker with; `chat.grammar.grammar_check` has refused every such grammar
    before it got here, except a token literal (`<name>`) that is not one token of this model,
    which only the vocabulary can tell."""
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        raise GrammarError(
            "The grammar was refused by llama.cpp for this model: a token literal (<...>) "
            "that is not one token of its vocabulary, most likely; check the grammar."
        )
    llama_cpp.llama_sampler_free(sampler)


class Engine:
    def __init__(self, llama: llama_cpp.Llama, *, chat_template: str = "") -> None:
        self.llama = llama
        # llama.cpp may round the context up; llama-cpp-python's token buffer keeps the size asked.
        self.n_ctx = min(llama.n_ctx(), len(llama.input_ids))
        model = llama._model
        eos_id, bos_id = llama.token_eos(), llama.token_bos()
        self._vocab = model.vocab
        self._formatter = Jinja2ChatFormatter(
            template=chat_template or FALLBACK_CHAT_TEMPLATE,
            eos_token=model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=model.token_get_text(bos_id) if bos_id != -1 else "",
        )
        self._lock = threading.Lock()
        self.reuses_prefix = self._prefix_reuse_is_exact()

    def _prefix_reuse_is_exact(self) -> bool:
        """Whether a prompt evaluated in pieces (a cached prefix, then the rest) gives exactly
        the logits of the same prompt evaluated whole, on this machine's llama.cpp kernels.

        "The same seed gives the same text" must hold whether or not a conversation's prefix
        was still in the context. llama.cpp's CPU kernels compute each token's row the same
        whatever the batch around it (measured with SmolLM2 on our AVX-512 machines, at batch
        sizes 1 to 512), so reuse is exact; a backend whose kernels depend on the batch shape
        would break the promise, and then every prompt is evaluated afresh instead."""
        llama = self.llama
        tokens = llama.tokenize(b"A short text to check that split evaluation is exact.") * 4
        tokens = tokens[: min(len(tokens), self.n_ctx // 2, 64)]
        vocab = llama.n_vocab()

        def logits(*pieces: list[int]) -> numpy.ndarray:
            llama.reset()
            for piece in pieces:
                llama.eval(piece)
            row = llama_cpp.llama_get_logits_ith(llama._ctx.ctx, -1)
            return numpy.ctypeslib.as_array(row, shape=(vocab,)).copy()

        try:
            whole = logits(tokens)
            exact = all(
                numpy.array_equal(logits(tokens[:cut], tokens[cut:]), whole)
                for cut in (len(tokens) - 1, 16)
            )
        finally:
            llama.reset()
        return exact

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The tokens the model will read for this request, response prefix included."""
        if request.messages is not None:
            return self._chat_tokens(request.messages, request.sampling.response_prefix)
        tokens = self.llama.tokenize((request.prompt or "").encode("utf-8"), add_bos=True)
        return tokens + self._prefix_tokens(request.sampling.response_prefix)

    def _prefix_tokens(self, prefix: str) -> list[int]:
        return self.llama.tokenize(prefix.encode("utf-8"), add_bos=False) if prefix else []

    def _chat_tokens(self, messages: list[dict[str, str]], prefix: str) -> list[int]:
        formatted = self._formatter(messages=messages)  # type: ignore[arg-type]
        tokens = self.llama.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        return tokens + self._prefix_tokens(prefix)

    def fit(
        self, request: GenerationRequest, *, aborted: Callable[[], bool] = lambda: False
    ) -> tuple[list[int], Trimmed | None]:
        """The prompt's tokens, leaving room for an answer in the context window.

        Policy: the system prompt and the newest turn always stay; the fewest oldest other
        turns are left out for the prompt to leave room for `max_tokens` (or a quarter of the
        window, whichever is smaller). A newest turn that cannot fit even alone raises
        PromptTooLong. The number to leave out is found by bisection, so a history of n turns
        is formatted and tokenized about log2(n) times, not n times; `aborted` is asked between
        tries so that a stop is heard while a long history is measured.
        """
        sampling = request.sampling
        room = min(sampling.max_tokens, self.n_ctx // 4)
        tokens = self.prompt_tokens(request)
        if request.messages is None or len(tokens) + room <= self.n_ctx:
            if len(tokens) >= self.n_ctx:
                raise PromptTooLong(len(tokens), self.n_ctx)
            return tokens, None
        full = len(tokens)
        system = [m for m in request.messages[:1] if m["role"] == "system"]
        turns = request.messages[len(system) :]

        def tokens_without(dropped: int) -> list[int]:
            if aborted():
                raise GenerationAborted
            return self._chat_tokens(system + turns[dropped:], sampling.response_prefix)

        # Leaving out `fits` turns is enough, leaving out `short` is not.
        short, fits = 0, len(turns) - 1
        best = tokens_without(fits) if fits > 0 else tokens
        if len(best) + room > self.n_ctx:
            if len(best) >= self.n_ctx:
                raise PromptTooLong(len(best), self.n_ctx)
            short = fits  # even the newest turn alone leaves less room than asked: keep it
        while fits - short > 1:
            middle = (short + fits) // 2
            candidate = tokens_without(middle)
            if len(candidate) + room <= self.n_ctx:
                fits, best = middle, candidate
            else:
                short = middle
        if fits == 0:
            return tokens, None
        return best, Trimmed(turns=fits, tokens=full - len(best))

    def cached_prefix(self, tokens: list[int]) -> int:
        """How many leading tokens are already evaluated in the context (llama.cpp reuses them)."""
        if not self.reuses_prefix:
            self.llama.n_tokens = 0  # llama-cpp-python then evaluates the whole prompt
            return 0
        evaluated = self.llama.input_ids[: self.llama.n_tokens]
        same = 0
        for a, b in zip(evaluated, tokens[:-1], strict=False):
            if a != b:
                break
            same += 1
        return same

    def grammar_check(self, grammar: str) -> None:
        grammar_sampler_check(self._vocab, grammar)

    def submit(self, request: GenerationRequest) -> Generation:
        return Generation(self, request)

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))


class Generation:
    def __init__(self, engine: Engine, request: GenerationRequest) -> None:
        self.engine = engine
        self.request = request
        self._abort = threading.Event()

    def abort(self) -> None:
        self._abort.set()

    def events(self) -> Iterator[Event]:
        engine = self.engine
        with engine._lock:
            yield from self._run(engine.llama)

    def _run(self, llama: llama_cpp.Llama) -> Iterator[Event]:
        sampling = self.request.sampling
        started = time.perf_counter()
        seed = sampling.seed if sampling.seed is not None else secrets.randbelow(2**31)
        try:
            tokens, trimmed = self.engine.fit(self.request, aborted=self._abort.is_set)
        except GenerationAborted:
            yield Finished(
                content="",
                finish_reason="aborted",
                prompt_tokens=0,
                completion_tokens=0,
                prompt_ms=0.0,
                generation_ms=0.0,
                seed=seed,
                cached_tokens=0,
                trimmed=None,
            )
            return
        cached = self.engine.cached_prefix(tokens)
        max_tokens = min(sampling.max_tokens, self.engine.n_ctx - len(tokens))

        llama.set_seed(seed)
        grammar = None
        if sampling.grammar:
            self.engine.grammar_check(sampling.grammar)
            grammar = llama_cpp.LlamaGrammar.from_string(sampling.grammar, verbose=False)

        assembler = TextAssembler(stops=sampling.stop, prefix=sampling.response_prefix)
        if shown := assembler.start():
            yield TextDelta(shown)
        completion_tokens = 0
        finish_reason = "length"
        first_token_at: float | None = None

        for token in llama.generate(
            tokens,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            temp=sampling.temperature,
            repeat_penalty=sampling.repeat_penalty,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            grammar=grammar,
        ):
            if first_token_at is None:
                first_token_at = time.perf_counter()
            if self._abort.is_set():
                finish_reason = "aborted"
                break
            if self.engine.is_end_of_generation(token):
                finish_reason = "stop"
                break
            completion_tokens += 1
            if shown := assembler.feed(llama.detokenize([token])):
                yield TextDelta(shown)
            if assembler.stopped:
                finish_reason = "stop"
                break
            if completion_tokens >= max_tokens:
                break

        if shown := assembler.finish():
            yield TextDelta(shown)
        text = assembler.text
        ended = time.perf_counter()
        first = first_token_at or ended
        yield Finished(
            content=text,
            finish_reason=finish_reason,
            prompt_tokens=len(tokens),
            completion_tokens=completion_tokens,
            prompt_ms=(first - started) * 1000,
            generation_ms=(ended - first) * 1000,
            seed=seed,
            cached_tokens=cached,
            trimmed=trimmed,
        )
