"""The engine: one loaded model serving many answers at once.

`BatchedEngine.submit(request)` gives a `BatchedGeneration` whose `events()` stream
`TextDelta`s and end with one `Finished`, and whose `abort()` (safe from any thread) stops it
within a decode step. Many threads may submit at once: each generation's prompt is formatted,
trimmed and tokenized in the caller's thread, its tokens are decoded by the model's
`Scheduler` together with every other running answer, and its text is assembled back in the
caller's thread (`inference.text`). Nothing here knows about chats, users or Django: a
request is messages (or a raw prompt) and sampling settings; the caller says its tier and its
owner, and may tag it to abort it later by tag (`generations_abort`).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import llama_cpp
from llama_cpp._internals import LlamaModel
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from inference.prefix_cache import PrefixCache
from inference.requests import (
    FALLBACK_CHAT_TEMPLATE,
    Event,
    Finished,
    GenerationAborted,
    GenerationRequest,
    GrammarRefused,
    PromptTooLong,
    TextDelta,
    Trimmed,
)
from inference.scheduler import Scheduler, SchedulerClosed, Sequence
from inference.text import TextAssembler


def grammar_sampler_check(vocab: object, grammar: str) -> None:
    """Build the grammar's sampler once against a model's vocabulary and free it.

    llama.cpp answers a grammar it refuses with a null sampler, which would crash the worker
    once used; the web side has refused every such grammar before it got here (see
    `chat.grammar`), except a token literal (`<name>`) that is not one token of this model,
    which only the vocabulary can tell."""
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        raise GrammarRefused(
            "The grammar was refused by llama.cpp for this model: a token literal (<...>) "
            "that is not one token of its vocabulary, most likely; check the grammar."
        )
    llama_cpp.llama_sampler_free(sampler)


# Generations running in this process by their callers' tags (a job id), for an abort that
# comes from outside the generation's thread (rq's stop-job command).
_tagged: dict[str, set[BatchedGeneration]] = {}
_tagged_lock = threading.Lock()


def generations_abort(tag: str) -> bool:
    """Abort every running generation tagged `tag`; whether there was one."""
    with _tagged_lock:
        generations = list(_tagged.get(tag, ()))
    for generation in generations:
        generation.abort()
    return bool(generations)


def generations_abort_all() -> int:
    with _tagged_lock:
        generations = [g for group in _tagged.values() for g in group]
    for generation in generations:
        generation.abort()
    return len(generations)


class Throughput:
    """Tokens written in the last `window` seconds, for the worker's status (tokens/s)."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def add(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            return len(self._times) / self.window

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()


# Tokens written by every engine of this process, for the worker's aggregate tokens/s.
throughput = Throughput()


@dataclass(frozen=True)
class SlotsState:
    total: int
    busy: int
    tags: list[str]  # the tags of the answers in the slots (message ids), busiest model first
    waiting: int  # submitted, waiting for a slot (a paused answer, or one beyond the slots)


class BatchedEngine:
    """One loaded model and its scheduler; owns both (`close()` frees them)."""

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
        max_per_owner: int | None = None,
        prefix_cache: PrefixCache | None = None,
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
            max_per_owner=max_per_owner,
            prefix_cache=prefix_cache,
            cache_space=str(id(self)),
        )
        self.parallel = parallel
        self.n_batch = n_batch
        self.n_ctx = self.scheduler.n_ctx_seq
        eos_id, bos_id = model.token_eos(), model.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=chat_template or FALLBACK_CHAT_TEMPLATE,
            eos_token=model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=model.token_get_text(bos_id) if bos_id != -1 else "",
        )
        self._running: set[BatchedGeneration] = set()
        self._running_lock = threading.Lock()

    def close(self) -> None:
        self.scheduler.close()
        self.model.close()

    def slots(self) -> SlotsState:
        with self._running_lock:
            running = list(self._running)
        busy = {id(s) for s in self.scheduler.busy()}
        in_slots = [g for g in running if g._sequence is not None and id(g._sequence) in busy]
        return SlotsState(
            total=self.parallel,
            busy=len(in_slots),
            tags=[g.tag for g in in_slots if g.tag],
            waiting=sum(1 for g in running if g._sequence is not None) - len(in_slots),
        )

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

    def grammar_check(self, grammar: str) -> None:
        grammar_sampler_check(self.model.vocab, grammar)

    def submit(
        self, request: GenerationRequest, *, tier: int = 1, owner: str = "", tag: str = ""
    ) -> BatchedGeneration:
        return BatchedGeneration(self, request, tier=tier, owner=owner, tag=tag)

    def _track(self, generation: BatchedGeneration, running: bool) -> None:
        with self._running_lock:
            if running:
                self._running.add(generation)
            else:
                self._running.discard(generation)
        if generation.tag:
            with _tagged_lock:
                group = _tagged.setdefault(generation.tag, set())
                if running:
                    group.add(generation)
                else:
                    group.discard(generation)
                    if not group:
                        del _tagged[generation.tag]


class BatchedGeneration:
    def __init__(
        self,
        engine: BatchedEngine,
        request: GenerationRequest,
        *,
        tier: int,
        owner: str,
        tag: str = "",
    ) -> None:
        self.engine = engine
        self.request = request
        self.tier = tier
        self.owner = owner
        self.tag = tag
        self._abort = threading.Event()
        self._sequence: Sequence | None = None

    def abort(self) -> None:
        self._abort.set()
        sequence = self._sequence
        if sequence is not None:
            sequence.abort()

    def events(self) -> Iterator[Event]:
        self.engine._track(self, True)
        try:
            yield from self._run()
        finally:
            self.engine._track(self, False)

    def _run(self) -> Iterator[Event]:
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
            throughput.add()
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
            preemptions=sequence.preemptions,
        )
