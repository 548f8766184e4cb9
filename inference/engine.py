"""The engine: one loaded model serving many answers at once.

`BatchedEngine.submit(request)` gives a `BatchedGeneration` whose `events()` stream
`TextDelta`s (after `PromptProgress` reports while a long prompt is read) and end with one
`Finished`, and whose `abort()` (safe from any thread) stops it
within a decode step. Many threads may submit at once: each generation's prompt is formatted,
trimmed and tokenized in the caller's thread, its tokens are decoded by the model's
`Scheduler` together with every other running answer, and its text is assembled back in the
caller's thread (`inference.text`), split into reasoning and content for a model whose
template thinks (`inference.reasoning`). Nothing here knows about chats, users or Django: a
request is messages (or a raw prompt) and sampling settings; the caller says its tier and its
owner, and may tag it to abort it later by tag (`generations_abort`).
"""

from __future__ import annotations

import functools
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
from inference.reasoning import ReasoningSplitter, ThinkingBudget, template_reasoning
from inference.requests import (
    FALLBACK_CHAT_TEMPLATE,
    Event,
    Finished,
    GenerationAborted,
    GenerationRequest,
    GrammarRefused,
    PromptProgress,
    PromptTooLong,
    ReasoningRefused,
    TextDelta,
    Trimmed,
)
from inference.sampling import Sampling
from inference.scheduler import Scheduler, SchedulerClosed, Sequence
from inference.specials import SpecialTexts
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
        self.thinking = template_reasoning(chat_template or FALLBACK_CHAT_TEMPLATE)
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

    @functools.cached_property
    def specials(self) -> SpecialTexts:
        """What this model's tokenizer reads as control tokens in a prompt (inference.specials)."""
        return SpecialTexts.of(self.model)

    def tokenize(self, text: str, *, add_bos: bool, special: bool = False) -> list[int]:
        return list(self.model.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The tokens the model will read for this request, response prefix included."""
        if request.messages is not None:
            return self._chat_tokens(request.messages, request.sampling)
        tokens = self.tokenize(request.prompt or "", add_bos=True)
        return tokens + self._prefix_tokens(request.sampling)

    def response_prefix(self, sampling: Sampling) -> str:
        """The forced start of the answer: the request's own, after an empty thinking block
        when thinking is switched off on a template that has no switch of its own (the
        documented fallback, what llama-server does too)."""
        return self._empty_block(sampling) + sampling.response_prefix

    def _empty_block(self, sampling: Sampling) -> str:
        markers = self.thinking.markers
        if sampling.reasoning is not False or markers is None:
            return ""
        if self.thinking.switch == "enable_thinking":
            return ""
        if self.thinking.opens_block:
            return markers.closing.lstrip()
        return f"{markers.open}\n{markers.closing}"

    def reasoning_check(self, request: GenerationRequest) -> None:
        """Refuse reasoning options this model (or this request) cannot honour."""
        sampling = request.sampling
        # Off is honoured by every model and request: there is nothing to switch off.
        if not sampling.reasoning and sampling.reasoning_budget is None:
            return
        if not self.thinking.thinks:
            raise ReasoningRefused(
                "This model does not think (its chat template has no thinking markers); "
                "leave out reasoning_budget and turn reasoning off, or pick a thinking model."
            )
        if request.messages is None:
            raise ReasoningRefused(
                "Reasoning options apply to chats, not to a raw prompt; leave them out."
            )
        if sampling.reasoning_budget is not None and sampling.grammar:
            raise ReasoningRefused(
                "A reasoning budget cannot be combined with a grammar, JSON mode or tools; "
                "leave out one of them."
            )

    def _prefix_tokens(self, sampling: Sampling) -> list[int]:
        # The empty block's markers are the template's own tokens (harmony's `<|end|>` is a
        # control token, read only as special); the request's prefix is text.
        block, prefix = self._empty_block(sampling), sampling.response_prefix
        tokens = self.tokenize(block, add_bos=False, special=True) if block else []
        return tokens + (self.tokenize(prefix, add_bos=False) if prefix else [])

    def _chat_prompt(self, messages: list[dict[str, str]], sampling: Sampling) -> tuple[str, bool]:
        options = {}
        if sampling.reasoning is not None and self.thinking.switch == "enable_thinking":
            options["enable_thinking"] = sampling.reasoning
        if not self.thinking.keeps_reasoning:
            messages = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages]
        formatted = self._formatter(messages=messages, **options)  # type: ignore[arg-type]
        return formatted.prompt, formatted.added_special

    def _chat_tokens(self, messages: list[dict[str, str]], sampling: Sampling) -> list[int]:
        prompt, added_special = self._chat_prompt(messages, sampling)
        tokens = self.tokenize(prompt, add_bos=not added_special, special=True)
        return tokens + self._prefix_tokens(sampling)

    def thinking_budget(
        self, budget: int, splitter: ReasoningSplitter, prefix: str
    ) -> ThinkingBudget:
        """The budget's watch in the decode loop; the block is open from the start when the
        prompt opened it or the response prefix does."""
        markers = splitter.markers
        opened = ReasoningSplitter(markers, thinking=splitter.thinking)
        opened.feed(prefix)
        return ThinkingBudget(
            budget=budget,
            open_text=markers.open.encode(),
            close_text=markers.close.encode(),
            close_tokens=self.tokenize(markers.closing, add_bos=False, special=True),
            piece=lambda token: self.model.token_to_piece(token, special=True),
            thinking=opened.thinking or bool(opened.closed),
            done=bool(opened.closed),
        )

    def splitter(self, request: GenerationRequest) -> ReasoningSplitter | None:
        """The splitter for this request's answer, or None when its text is all content."""
        markers = self.thinking.markers
        if markers is None or request.messages is None:
            return None
        prompt, _ = self._chat_prompt(request.messages, request.sampling)
        return ReasoningSplitter(markers, thinking=prompt.rstrip().endswith(markers.open))

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
            return self._chat_tokens(system + turns[dropped:], sampling)

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
        engine.reasoning_check(self.request)
        splitter = engine.splitter(self.request)
        sequence = Sequence(
            tokens,
            replace(sampling, seed=seed),
            tier=self.tier,
            owner=self.owner,
            max_tokens=min(sampling.max_tokens, engine.n_ctx - len(tokens)),
        )
        if splitter is not None and sampling.reasoning_budget is not None:
            sequence.thinking_budget = engine.thinking_budget(
                sampling.reasoning_budget, splitter, engine.response_prefix(sampling)
            )
            if sequence.thinking_budget.thinking and sampling.reasoning_budget == 0:
                sequence.thinking_budget.done = True
                sequence.force(sequence.thinking_budget.close_tokens)
        self._sequence = sequence
        if self._abort.is_set():
            yield replace(nothing, prompt_tokens=len(tokens))
            return
        engine.scheduler.submit(sequence)

        assembler = TextAssembler(stops=sampling.stop, prefix=engine.response_prefix(sampling))
        thoughts = _Thoughts(splitter)
        yield from thoughts.deltas(assembler.start())
        completion_tokens = 0
        first_token_at: float | None = None
        for token in sequence.events():
            if isinstance(token, PromptProgress):
                yield token  # a long prompt is being read: how far it got
                continue
            if first_token_at is None:
                first_token_at = time.perf_counter()
            if assembler.stopped:
                continue  # the rest of a step already decoded after the stop string
            completion_tokens += 1
            throughput.add()
            yield from thoughts.deltas(assembler.feed(engine.model.detokenize([token])))
            thoughts.count_token()
            if assembler.stopped:
                sequence.abort()
        end = sequence.end
        assert end is not None
        if end.reason == "error":
            raise SchedulerClosed(end.error)
        yield from thoughts.deltas(assembler.finish())
        yield from thoughts.finish()
        if assembler.stopped:
            reason = "stop"
        elif end.reason == "aborted":
            reason = "aborted"
        else:
            reason = end.reason
        ended = time.perf_counter()
        first = first_token_at or ended
        yield Finished(
            content=splitter.content if splitter else assembler.text,
            finish_reason=reason,
            prompt_tokens=len(tokens),
            completion_tokens=completion_tokens,
            prompt_ms=(first - started) * 1000,
            generation_ms=(ended - first) * 1000,
            seed=seed,
            cached_tokens=sequence.cached_tokens,
            trimmed=trimmed,
            preemptions=sequence.preemptions,
            reasoning=splitter.reasoning if splitter else "",
            reasoning_tokens=thoughts.tokens,
            reasoning_ms=((thoughts.closed_at or first) - first) * 1000 if thoughts.tokens else 0.0,
            note=splitter.note if splitter else "",
        )


class _Thoughts:
    """A generation's text through its reasoning splitter (when its model thinks): the
    deltas by channel and the tokens and time spent thinking. (The budget is kept in the
    decode loop: `inference.reasoning.ThinkingBudget`.)"""

    def __init__(self, splitter: ReasoningSplitter | None) -> None:
        self.splitter = splitter
        self.tokens = 0
        self.closed_at: float | None = None
        self._was_closed = False

    def deltas(self, text: str) -> Iterator[TextDelta]:
        if not text:
            return
        if self.splitter is None:
            yield TextDelta(text)
            return
        for piece in self.splitter.feed(text):
            yield TextDelta(piece.text, piece.channel)

    def count_token(self) -> None:
        """After each token: count it if it was thinking."""
        splitter = self.splitter
        if splitter is None:
            return
        just_closed = splitter.closed and not self._was_closed
        self._was_closed = splitter.closed
        if splitter.thinking or just_closed:
            self.tokens += 1
        if just_closed:
            self.closed_at = time.perf_counter()

    def finish(self) -> Iterator[TextDelta]:
        if self.splitter is None:
            return
        for piece in self.splitter.finish():
            yield TextDelta(piece.text, piece.channel)
        if self.splitter.note:
            self.tokens = 0  # an unclosed block is the answer, not thinking
