"""The batched engine: one loaded model serving many answers at once (not wired in yet).

It keeps the interface of the single-answer engine (`chat.engine.Engine`): `submit(request)`
gives a `Generation` whose `events()` stream `TextDelta`s and end with one `Finished`, and
whose `abort()` stops it within a step. Many threads may submit at once: each generation's
prompt is formatted, trimmed and tokenized in the caller's thread, its tokens are decoded by
the model's `Scheduler` together with every other running answer, and its text is assembled
back in the caller's thread (`inference.text`).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

from llama_cpp._internals import LlamaModel
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from chat.engine import (
    FALLBACK_CHAT_TEMPLATE,
    Event,
    Finished,
    GenerationAborted,
    GenerationRequest,
    PromptTooLong,
    TextDelta,
    Trimmed,
    grammar_sampler_check,
)
from inference.scheduler import Scheduler, SchedulerClosed, Sequence
from inference.text import TextAssembler


class BatchedEngine:
    def __init__(
        self,
        model: LlamaModel,
        *,
        n_ctx: int,
        parallel: int = 8,
        n_threads: int = 2,
        n_batch: int = 512,
        unified: bool = False,
        chat_template: str = "",
    ) -> None:
        self.model = model
        # A split cache gives every answer the whole context: the context is made that many
        # times larger (see docs/architecture.md for why split is the default).
        total = n_ctx if unified else n_ctx * parallel
        self.scheduler = Scheduler(
            model.model,
            n_ctx=total,
            parallel=parallel,
            n_batch=n_batch,
            n_threads=n_threads,
            unified=unified,
        )
        self.n_ctx = self.scheduler.n_ctx_seq
        eos_id, bos_id = model.token_eos(), model.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=chat_template or FALLBACK_CHAT_TEMPLATE,
            eos_token=model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=model.token_get_text(bos_id) if bos_id != -1 else "",
        )

    def close(self) -> None:
        self.scheduler.close()

    # -- prompts -------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool, special: bool = False) -> list[int]:
        return list(self.model.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The tokens the model will read for this request, response prefix included."""
        if request.messages is not None:
            return self._chat_tokens(request.messages, request.sampling.response_prefix)
        tokens = self.tokenize(request.prompt or "", add_bos=True)
        return tokens + self._prefix_tokens(request.sampling.response_prefix)

    def _prefix_tokens(self, prefix: str) -> list[int]:
        return self.tokenize(prefix, add_bos=False) if prefix else []

    def _chat_tokens(self, messages: list[dict[str, str]], prefix: str) -> list[int]:
        formatted = self._formatter(messages=messages)  # type: ignore[arg-type]
        tokens = self.tokenize(formatted.prompt, add_bos=not formatted.added_special, special=True)
        return tokens + self._prefix_tokens(prefix)

    def fit(
        self, request: GenerationRequest, *, aborted: Callable[[], bool] = lambda: False
    ) -> tuple[list[int], Trimmed | None]:
        """The prompt's tokens, leaving room for an answer (see `chat.engine.Engine.fit`: the
        same policy, by bisection)."""
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

        short, fits = 0, len(turns) - 1
        best = tokens_without(fits) if fits > 0 else tokens
        if len(best) + room > self.n_ctx:
            if len(best) >= self.n_ctx:
                raise PromptTooLong(len(best), self.n_ctx)
            short = fits
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

    def grammar_check(self, grammar: str) -> None:
        grammar_sampler_check(self.model.vocab, grammar)

    def submit(
        self, request: GenerationRequest, *, tier: int = 1, owner: str = ""
    ) -> BatchedGeneration:
        return BatchedGeneration(self, request, tier=tier, owner=owner)


class BatchedGeneration:
    def __init__(
        self, engine: BatchedEngine, request: GenerationRequest, *, tier: int, owner: str
    ) -> None:
        self.engine = engine
        self.request = request
        self.tier = tier
        self.owner = owner
        self._abort = threading.Event()
        self._sequence: Sequence | None = None

    def abort(self) -> None:
        self._abort.set()
        sequence = self._sequence
        if sequence is not None:
            sequence.abort()

    def events(self) -> Iterator[Event]:
        engine = self.engine
        sampling = self.request.sampling
        started = time.perf_counter()
        seed = sampling.seed if sampling.seed is not None else secrets.randbelow(2**31)
        nothing = Finished(
            content="",
            finish_reason="aborted",
            prompt_tokens=0,
            completion_tokens=0,
            prompt_ms=0.0,
            generation_ms=0.0,
            seed=seed,
        )
        try:
            tokens, trimmed = engine.fit(self.request, aborted=self._abort.is_set)
        except GenerationAborted:
            yield nothing
            return
        if sampling.grammar:
            engine.grammar_check(sampling.grammar)
        sequence = Sequence(
            tokens,
            replace(sampling, seed=seed),
            tier=self.tier,
            owner=self.owner,
            max_tokens=min(sampling.max_tokens, engine.n_ctx - len(tokens)),
        )
        self._sequence = sequence
        if self._abort.is_set():
            yield replace(nothing, prompt_tokens=len(tokens))
            return
        engine.scheduler.submit(sequence)

        assembler = TextAssembler(stops=sampling.stop, prefix=sampling.response_prefix)
        if shown := assembler.start():
            yield TextDelta(shown)
        completion_tokens = 0
        first_token_at: float | None = None
        for token in sequence.tokens():
            if first_token_at is None:
                first_token_at = time.perf_counter()
            if assembler.stopped:
                continue  # the rest of a step already decoded after the stop string
            completion_tokens += 1
            if shown := assembler.feed(engine.model.detokenize([token])):
                yield TextDelta(shown)
            if assembler.stopped:
                sequence.abort()
        end = sequence.end
        assert end is not None
        if end.reason == "error":
            raise SchedulerClosed(end.error)
        if shown := assembler.finish():
            yield TextDelta(shown)
        if assembler.stopped:
            reason = "stop"
        elif end.reason == "aborted":
            reason = "aborted"
        else:
            reason = end.reason
        ended = time.perf_counter()
        first = first_token_at or ended
        yield Finished(
            content=assembler.text,
            finish_reason=reason,
            prompt_tokens=len(tokens),
            completion_tokens=completion_tokens,
            prompt_ms=(first - started) * 1000,
            generation_ms=(ended - first) * 1000,
            seed=seed,
            cached_tokens=sequence.cached_tokens,
            trimmed=trimmed,
        )
