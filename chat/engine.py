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
from collections.abc import Iterator
from dataclasses import dataclass, field

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

# Used when a model's GGUF has no chat template: ChatML, what most small chat models speak.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


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
class Sampling:
    """Sampling settings of one request, already validated (see chat.options)."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    grammar: str | None = None
    response_prefix: str = ""


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


def _partial_stop_len(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of `text` could be the start of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


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

    def fit(self, request: GenerationRequest) -> tuple[list[int], Trimmed | None]:
        """The prompt's tokens, leaving room for an answer in the context window.

        Policy: the system prompt and the newest turn always stay; the oldest other turns are
        left out, one message at a time, until the prompt leaves room for `max_tokens` (or a
        quarter of the window, whichever is smaller). A newest turn that cannot fit even alone
        raises PromptTooLong.
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
        dropped = 0
        while len(turns) > 1 and len(tokens) + room > self.n_ctx:
            turns = turns[1:]
            dropped += 1
            tokens = self._chat_tokens(system + turns, sampling.response_prefix)
        if len(tokens) >= self.n_ctx:
            raise PromptTooLong(len(tokens), self.n_ctx)
        return tokens, Trimmed(turns=dropped, tokens=full - len(tokens)) if dropped else None

    def cached_prefix(self, tokens: list[int]) -> int:
        """How many leading tokens are already evaluated in the context (llama.cpp reuses them)."""
        evaluated = self.llama.input_ids[: self.llama.n_tokens]
        same = 0
        for a, b in zip(evaluated, tokens[:-1], strict=False):
            if a != b:
                break
            same += 1
        return same

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
        tokens, trimmed = self.engine.fit(self.request)
        cached = self.engine.cached_prefix(tokens)
        max_tokens = min(sampling.max_tokens, self.engine.n_ctx - len(tokens))

        seed = sampling.seed if sampling.seed is not None else secrets.randbelow(2**31)
        llama.set_seed(seed)
        grammar = (
            llama_cpp.LlamaGrammar.from_string(sampling.grammar, verbose=False)
            if sampling.grammar
            else None
        )

        text = sampling.response_prefix
        sent = 0  # characters of `text` already yielded
        if text:
            yield TextDelta(text)
            sent = len(text)
        pending = b""  # bytes of a UTF-8 character split across tokens
        completion_tokens = 0
        finish_reason = "length"
        first_token_at: float | None = None
        stops = sampling.stop

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
            pending += llama.detokenize([token])
            try:
                piece = pending.decode("utf-8")
                pending = b""
            except UnicodeDecodeError:
                if len(pending) < 4:
                    continue  # wait for the rest of the character
                piece = pending.decode("utf-8", errors="replace")
                pending = b""
            search_from = max(0, len(text) - max((len(s) for s in stops), default=0))
            text += piece
            cut = min((i for s in stops if (i := text.find(s, search_from)) != -1), default=-1)
            if cut != -1:
                text = text[:cut]
                finish_reason = "stop"
                break
            safe_end = len(text) - _partial_stop_len(text, stops) if stops else len(text)
            if safe_end > sent:
                yield TextDelta(text[sent:safe_end])
                sent = safe_end
            if completion_tokens >= max_tokens:
                break

        if pending:
            text += pending.decode("utf-8", errors="replace")
        if len(text) > sent:
            yield TextDelta(text[sent:])
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
