"""One loaded model's decode loop: every running answer advances in the same `llama_decode`.

A `Scheduler` owns a llama.cpp context with `parallel` sequences and one thread that, step
after step, builds a batch of the next token of every answer being written plus chunks of the
prompts being read, decodes it once, and samples each answer's next token with that answer's
own sampler chain (seed, penalties, grammar). Callers `submit` token ids and get a `Sequence`
whose `tokens()` yield the sampled ids as they come; the text side (`inference.text`) is
theirs. Nothing here knows about chats, users or Django.

What it decides:
- **Admission.** Waiting sequences take free slots by priority tier, then arrival; within a
  tier no owner takes more than `max_per_owner` slots while someone else waits.
- **Preemption.** A sequence of a better tier that finds every slot busy pauses the newest
  sequence of the worst running tier: its cache is copied to host memory
  (`llama_state_seq_get_data`) with its sampler chain kept, and it resumes where it stopped
  when a slot frees, so its reader sees only a pause.
- **Prefix reuse.** A finished sequence's tokens stay in its slot; a new prompt goes to the
  free slot that shares its longest prefix and evaluates only the rest. A slot about to be
  given to another prompt saves what it held to host memory (`inference.prefix_cache`, within
  `host_cache_bytes`), and a prompt that shares more with a saved cache, or with another
  slot's (a system prompt many conversations share), starts from a copy of it.
- **Chunked prefill.** While answers stream, a long prompt is read a chunk per step, sized so
  that a step takes about `step_target` seconds (measured on the steps before), so the answers
  already streaming keep getting a token every step without a visible stall; with nobody
  streaming, prompts are read a whole batch at a time. A prompt read in more than one step
  reports how far it got (`PromptProgress`, at most every `PROGRESS_EVERY_S` per answer, and
  once when it is read whole), for a reader who would otherwise stare at a silent answer.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from inference.prefix_cache import PrefixCache, common_prefix
from inference.reasoning import ThinkingBudget
from inference.requests import PromptProgress
from inference.sampling import Sampling

log = logging.getLogger(__name__)


# While answers stream, a step that also reads a prompt should take about this long, so their
# readers see short pauses while a pasted document is read. Steps drift above the target (later
# chunks attend over more of the document, the box has other work): aiming at 0.2 s, readers
# saw gaps of up to 0.37 s end to end on a 2-core box, and aiming at 0.15 s still up to 0.37 s
# in one run of three; 0.12 s, with the chunk growing by at most half at a time, keeps them
# under 0.3 s.
STEP_TARGET_S = 0.12
# How much the chunk may grow after one step: less than it may shrink, since a step that
# overruns is a stall people see and a step that underruns costs only a little reading speed.
MAX_CHUNK_GROWTH = 1.5
MIN_CHUNK = 16
# The chunk a scheduler starts from, before it has timed a step: small, since a step that
# overruns is a stall people see, and it grows within a few steps where the box is fast.
FIRST_CHUNK = 32
# A long prompt's reading is reported at most this often per answer: each report is a frame
# through Redis and daphne to the page, CPU taken from llama.cpp on a small box.
PROGRESS_EVERY_S = 0.25


class SchedulerClosed(Exception):
    """The scheduler stopped (its model is being unloaded) before the sequence ended."""


@dataclass(frozen=True)
class End:
    """How a sequence ended: `stop` (end of generation), `length`, `aborted` or `error`."""

    reason: str
    error: str = ""


@dataclass
class _Paused:
    state: bytes
    n_past: int
    cached: list[int]


@dataclass(eq=False)
class Sequence:
    """One answer in the scheduler. Read `tokens()` from one thread; `abort()` from any."""

    prompt: list[int]
    sampling: Sampling
    tier: int = 1  # 0 is served first
    owner: str = ""
    max_tokens: int = 512
    submitted_at: float = field(default_factory=time.monotonic)
    # Filled in by the scheduler.
    cached_tokens: int = 0
    completion_tokens: int = 0
    first_token_at: float | None = None
    started_at: float | None = None
    preemptions: int = 0
    _out: queue.SimpleQueue[int | PromptProgress | End] = field(default_factory=queue.SimpleQueue)
    _aborted: threading.Event = field(default_factory=threading.Event)
    _slot: int | None = None
    _n_past: int = 0  # tokens of this sequence evaluated in its slot
    _pending: list[int] = field(default_factory=list)  # to evaluate next
    _chain: Any = None  # its llama_sampler chain
    _paused: _Paused | None = None
    _ended: bool = False
    _forced: list[int] | None = None  # written in place of the next sampled token
    _progress_at: float | None = None  # when its reading was last reported (None: never)
    thinking_budget: ThinkingBudget | None = None

    def abort(self) -> None:
        self._aborted.set()

    def force(self, tokens: list[int]) -> None:
        """Write these tokens in place of the next one sampled (from any thread): how a
        thinking budget closes the thinking. They reach `tokens()` like sampled ones."""
        self._forced = list(tokens)

    def events(self, timeout: float | None = None) -> Iterator[int | PromptProgress]:
        """The sampled token ids, after the reports of a long prompt's reading, until the
        sequence ends; then `self.end` says how."""
        while True:
            item = self._out.get(timeout=timeout)
            if isinstance(item, End):
                self.end = item
                return
            yield item

    def tokens(self, timeout: float | None = None) -> Iterator[int]:
        """The sampled token ids only (see `events`)."""
        for item in self.events(timeout):
            if not isinstance(item, PromptProgress):
                yield item

    end: End | None = None


@dataclass
class _Slot:
    index: int
    cached: list[int] = field(default_factory=list)  # tokens whose cache this slot holds
    sequence: Sequence | None = None
    last_used: float = 0.0


# A slot's cache is saved to host memory when at least this many of its tokens would be lost,
# and a prompt is started from another slot's or a saved cache when that spares it at least
# this many tokens over what its own slot holds.
SAVE_MIN_TOKENS = 32
COPY_MIN_GAIN = 16


def prefixes_reusable(model: llama_cpp.llama_model_p) -> bool:
    """Whether a sequence's cache can be cut after a prefix and read on from there: not for
    recurrent or hybrid models (their state is not per position) nor sliding-window attention
    (the cells of early positions are dropped as the window moves)."""
    return not (
        llama_cpp.llama_model_is_recurrent(model)
        or llama_cpp.llama_model_is_hybrid(model)
        or llama_cpp.llama_model_n_swa(model) > 0
    )


class Scheduler:
    def __init__(
        self,
        model: llama_cpp.llama_model_p,
        *,
        n_ctx: int,
        parallel: int = 8,
        n_batch: int = 512,
        n_threads: int = 2,
        unified: bool = True,
        prefill_chunk: int = 256,
        step_target: float = STEP_TARGET_S,
        max_per_owner: int | None = None,
        prefix_cache: PrefixCache | None = None,
        cache_space: str = "",
    ) -> None:
        self.model = model
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = parallel
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.kv_unified = unified
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not make a context of {n_ctx} tokens.")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_ctx = llama_cpp.llama_n_ctx(self.ctx)
        # Unified: one answer may fill the whole context; split: each slot has its share.
        self.n_ctx_seq = llama_cpp.llama_n_ctx_seq(self.ctx)
        self.n_batch = n_batch
        self.prefill_chunk = min(prefill_chunk, n_batch)  # the largest chunk while others stream
        self.step_target = step_target
        self.chunk = min(FIRST_CHUNK, self.prefill_chunk)  # learnt from how long steps take
        self.parallel = parallel
        self.max_per_owner = max_per_owner or max(1, parallel // 2)
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.slots = [_Slot(i) for i in range(parallel)]
        self.reuse_prefixes = prefixes_reusable(model)
        # Where slots save what they held; none (a budget of 0) unless the caller gives one.
        usable = prefix_cache is not None and self.reuse_prefixes
        self.prefix_cache = prefix_cache if usable and prefix_cache else PrefixCache(0)
        self.cache_space = cache_space
        self._waiting: list[Sequence] = []
        # What a step has for the readers, handed over when the step is done (see `_step`).
        self._outbox: list[tuple[Sequence, int | PromptProgress | End]] = []
        self._eog: dict[int, bool] = {}  # end-of-generation tokens, asked of llama.cpp once each
        self._lock = threading.Condition()
        self._closing = False
        self.steps = 0
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    # -- the callers' side ---------------------------------------------------------------------

    def submit(self, sequence: Sequence) -> Sequence:
        if len(sequence.prompt) >= self.n_ctx_seq:
            raise ValueError(
                f"The prompt is {len(sequence.prompt)} tokens; a sequence holds {self.n_ctx_seq}."
            )
        with self._lock:
            if self._closing:
                raise SchedulerClosed("The model is being unloaded.")
            self._waiting.append(sequence)
            self._lock.notify()
        return sequence

    def busy(self) -> list[Sequence]:
        return [s.sequence for s in self.slots if s.sequence is not None]

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._thread.join()
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        self.prefix_cache.clear(self.cache_space)

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._closing and not self._work_left():
                        self._lock.wait()
                    if self._closing:
                        break
                    self._admit()
                self._step()
        except Exception as exc:  # a failed decode ends every answer with a sentence
            log.exception("The scheduler stopped")
            self._end_all(End("error", f"The model stopped working: {exc}"))
            return
        self._end_all(End("error", "The model was unloaded while this answer was written."))

    def _work_left(self) -> bool:
        return bool(self._waiting) or any(s.sequence is not None for s in self.slots)

    def _end_all(self, end: End) -> None:
        with self._lock:
            sequences = [s.sequence for s in self.slots if s.sequence] + self._waiting
            self._waiting.clear()
        for sequence in sequences:
            if not sequence._ended:
                sequence._ended = True
                sequence._out.put(end)

    def _running_count(self, owner: str) -> int:
        return sum(1 for s in self.slots if s.sequence is not None and s.sequence.owner == owner)

    def _next_waiting(self) -> Sequence | None:
        """The best waiting sequence: by tier, then arrival; an owner at their share waits
        while another owner's sequence of the same tier is waiting."""
        ordered = sorted(self._waiting, key=lambda s: (s.tier, s.submitted_at))
        for sequence in ordered:
            if sequence._aborted.is_set():
                return sequence
            over = self._running_count(sequence.owner) >= self.max_per_owner
            others = any(o.tier == sequence.tier and o.owner != sequence.owner for o in ordered)
            if not (over and others):
                return sequence
        return ordered[0] if ordered else None

    def _admit(self) -> None:
        while self._waiting:
            sequence = self._next_waiting()
            if sequence is None:
                return
            if sequence._aborted.is_set():
                self._waiting.remove(sequence)
                sequence._ended = True
                sequence._out.put(End("aborted"))
                continue
            slot = self._free_slot(sequence)
            if slot is None:
                slot = self._preempt_for(sequence)
            if slot is None:
                return
            self._waiting.remove(sequence)
            self._place(sequence, slot)

    def _free_slot(self, sequence: Sequence) -> _Slot | None:
        free = [s for s in self.slots if s.sequence is None]
        if not free:
            return None
        if sequence._paused is not None:
            return min(free, key=lambda s: s.last_used)
        return max(free, key=lambda s: (common_prefix(s.cached, sequence.prompt), -s.last_used))

    def _preempt_for(self, sequence: Sequence) -> _Slot | None:
        running = [s for s in self.slots if s.sequence is not None]
        worst_tier = max(s.sequence.tier for s in running if s.sequence)
        if sequence.tier >= worst_tier:
            return None
        victims = [s for s in running if s.sequence and s.sequence.tier == worst_tier]
        slot = max(victims, key=lambda s: s.sequence.submitted_at if s.sequence else 0)
        paused = slot.sequence
        assert paused is not None
        self._pause(paused, slot)
        self._waiting.append(paused)
        return slot

    def _pause(self, sequence: Sequence, slot: _Slot) -> None:
        sequence._paused = _Paused(
            state=self._state(slot.index), n_past=sequence._n_past, cached=slot.cached
        )
        sequence.preemptions += 1
        llama_cpp.llama_memory_seq_rm(self.memory, slot.index, -1, -1)
        slot.sequence, slot.cached = None, []
        sequence._slot = None

    def _state(self, index: int) -> bytes:
        """A copy of one sequence's cache."""
        size = llama_cpp.llama_state_seq_get_size(self.ctx, index)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self.ctx, buffer, size, index)
        # Not `bytes(buffer[:written])`: slicing a ctypes array makes a list of ints first,
        # 0.1 s for the 4 MB of a 170-token slot, with every other answer's step waiting.
        return ctypes.string_at(buffer, written)

    def _restore(self, index: int, state: bytes) -> None:
        """Make sequence `index`'s cache the copy `state` (and nothing else)."""
        llama_cpp.llama_memory_seq_rm(self.memory, index, -1, -1)
        data = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama_cpp.llama_state_seq_set_data(self.ctx, data, len(state), index) == 0:
            raise RuntimeError("llama.cpp could not restore a saved cache.")

    def _keep(self, slot: _Slot, kept: int) -> None:
        """Before a slot's cache is cut to its first `kept` tokens: save it to host memory if
        that loses enough and no saved prefix holds it already."""
        if not self.prefix_cache.budget or len(slot.cached) - kept < SAVE_MIN_TOKENS:
            return
        if not self.prefix_cache.covers(self.cache_space, slot.cached):
            self.prefix_cache.add(self.cache_space, list(slot.cached), self._state(slot.index))

    def _better_source(
        self, slot: _Slot, prompt: list[int], reuse: int
    ) -> tuple[bytes, list[int], int] | None:
        """A cache sharing more of `prompt` than `slot` does, elsewhere: another slot's (a
        system prompt many conversations share) or one saved in host memory (a conversation's
        earlier turns); its state, the tokens it holds, and how many of them `prompt` shares."""
        others = [(common_prefix(o.cached, prompt), o) for o in self.slots if o is not slot]
        shared, other = max(others, key=lambda pair: pair[0], default=(0, None))
        saved, saved_shared = self.prefix_cache.best(self.cache_space, prompt)
        if max(shared, saved_shared) < reuse + COPY_MIN_GAIN:
            return None
        if saved is not None and saved_shared > shared:
            self.prefix_cache.used(saved)
            return saved.state, saved.tokens, saved_shared
        assert other is not None
        return self._state(other.index), list(other.cached), shared

    def _place(self, sequence: Sequence, slot: _Slot) -> None:
        slot.sequence = sequence
        slot.last_used = time.monotonic()
        sequence._slot = slot.index
        if sequence._paused is not None:
            paused, sequence._paused = sequence._paused, None
            self._keep(slot, 0)
            self._restore(slot.index, paused.state)
            sequence._n_past = paused.n_past
            slot.cached = paused.cached
            return
        prompt = sequence.prompt
        # The last prompt token is always read again: its logits give the first answer token.
        limit = len(prompt) - 1
        reuse = 0
        if self.reuse_prefixes:
            reuse = min(common_prefix(slot.cached, prompt), limit)
            source = self._better_source(slot, prompt, reuse)
            if source is not None:
                state, held, shared = source
                self._keep(slot, 0)
                self._restore(slot.index, state)
                slot.cached = held
                reuse = min(shared, limit)
            else:
                self._keep(slot, reuse)
        if not llama_cpp.llama_memory_seq_rm(self.memory, slot.index, reuse, -1):
            llama_cpp.llama_memory_seq_rm(self.memory, slot.index, -1, -1)
            reuse = 0
        sequence.cached_tokens = reuse
        sequence.started_at = time.monotonic()
        sequence._n_past = reuse
        sequence._pending = prompt[reuse:]
        sequence._chain = self._sampler_chain(sequence.sampling)
        slot.cached = list(prompt[:reuse])

    def _sampler_chain(self, sampling: Sampling) -> Any:
        params = llama_cpp.llama_sampler_chain_default_params()
        chain = llama_cpp.llama_sampler_chain_init(params)

        def add(sampler: Any) -> None:
            if not sampler:
                llama_cpp.llama_sampler_free(chain)
                raise ValueError("llama.cpp refused a sampler setting (the grammar, most likely).")
            llama_cpp.llama_sampler_chain_add(chain, sampler)

        if sampling.grammar:
            add(
                llama_cpp.llama_sampler_init_grammar(self.vocab, sampling.grammar.encode(), b"root")
            )
        add(
            llama_cpp.llama_sampler_init_penalties(
                self.n_vocab,
                64,
                sampling.repeat_penalty,
                sampling.frequency_penalty,
                sampling.presence_penalty,
            )
        )
        if sampling.temperature <= 0:
            add(llama_cpp.llama_sampler_init_greedy())
        else:
            add(llama_cpp.llama_sampler_init_top_k(sampling.top_k))
            add(llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
            add(llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
            add(llama_cpp.llama_sampler_init_temp(sampling.temperature))
            seed = sampling.seed if sampling.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
            add(llama_cpp.llama_sampler_init_dist(seed))
        return chain

    def _release(self, slot: _Slot, end: End) -> None:
        sequence = slot.sequence
        assert sequence is not None
        slot.sequence = None
        slot.last_used = time.monotonic()
        if sequence._chain is not None:
            llama_cpp.llama_sampler_free(sequence._chain)
            sequence._chain = None
        sequence._ended = True
        self._outbox.append((sequence, end))

    def _learn_chunk(self, took: float) -> None:
        """Size the next chunk read beside streaming answers so that a step takes about
        `step_target`: the chunk scales by target / measured, at most halved or grown by
        half at a time, so one slow or fast step (the box busy elsewhere) does not swing it."""
        scale = min(MAX_CHUNK_GROWTH, max(0.5, self.step_target / max(took, 1e-6)))
        self.chunk = max(MIN_CHUNK, min(self.prefill_chunk, int(self.chunk * scale)))

    def _step(self) -> None:
        """One llama_decode over every running sequence, then what it gave handed to the
        readers all at once: a reader woken mid-step takes the GIL from this thread at each
        llama.cpp call that follows (sampling the next row, freeing a chain), and every answer's
        next decode waits for it. Measured at C=8: the time between two decodes fell from
        about 3 ms to 1-2 ms."""
        try:
            self._decode_and_sample()
        finally:
            outbox, self._outbox = self._outbox, []
            for sequence, item in outbox:
                sequence._out.put(item)

    def _is_eog(self, token: int) -> bool:
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))
        return eog

    def _decode_and_sample(self) -> None:
        """A token each for the sequences writing, a prompt chunk each for those reading,
        within the batch size; decoded once, and each writer's next token sampled."""
        batch = self.batch
        rows: list[tuple[_Slot, int]] = []  # (slot, batch row) whose logits are sampled
        reading_now: list[Sequence] = []  # those that read part of their prompt in this step
        n = 0
        with self._lock:
            active = [s for s in self.slots if s.sequence is not None]
        for slot in active:
            sequence = slot.sequence
            assert sequence is not None
            if sequence._aborted.is_set():
                self._release(slot, End("aborted"))
        active = [s for s in active if s.sequence is not None]
        # Writers first (one token each), then readers share what is left of the batch.
        writers = [s for s in active if s.sequence and len(s.sequence._pending) == 1]
        readers = [s for s in active if s.sequence and len(s.sequence._pending) > 1]
        # With nobody streaming, a prompt is read as fast as the batch allows.
        reading = self.chunk if writers else self.n_batch
        read = 0  # prompt tokens in this step
        for slot in writers + readers:
            sequence = slot.sequence
            assert sequence is not None
            room = self.n_batch - n
            if room <= 0:
                break
            writing = slot in writers
            take = min(len(sequence._pending), room, 1 if writing else reading)
            if sequence._n_past + take > self.n_ctx_seq:
                self._release(slot, End("length"))
                continue
            chunk = sequence._pending[:take]
            for offset, token in enumerate(chunk):
                batch.token[n] = token
                batch.pos[n] = sequence._n_past + offset
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = slot.index
                last = offset == take - 1 and take == len(sequence._pending)
                batch.logits[n] = last
                if last:
                    rows.append((slot, n))
                n += 1
            del sequence._pending[:take]
            if not writing:
                read += take
                if sequence.first_token_at is None:  # its prompt, not forced tokens
                    reading_now.append(sequence)
            sequence._n_past += take
            slot.cached.extend(chunk)
        if n == 0:
            return
        batch.n_tokens = n
        started = time.monotonic()
        result = llama_cpp.llama_decode(self.ctx, batch)
        if result != 0:
            raise RuntimeError(f"llama_decode failed with code {result} (the context is full?)")
        self.steps += 1
        if writers and read >= reading:
            self._learn_chunk(time.monotonic() - started)
        self._report_reading(reading_now)
        sampled = []
        for slot, row in rows:
            assert slot.sequence is not None
            sampled.append(llama_cpp.llama_sampler_sample(slot.sequence._chain, self.ctx, row))
        for (slot, _), token in zip(rows, sampled, strict=True):
            sequence = slot.sequence
            assert sequence is not None
            if sequence.first_token_at is None:
                sequence.first_token_at = time.monotonic()
            if self._is_eog(token):
                self._release(slot, End("stop"))
                continue
            forced, sequence._forced = sequence._forced, None
            if forced:
                self._write_forced(slot, forced)
                continue
            sequence.completion_tokens += 1
            self._outbox.append((sequence, token))
            sequence._pending = [token]
            if sequence.thinking_budget is not None:
                sequence._forced = sequence.thinking_budget.after(token) or sequence._forced
            if sequence.completion_tokens >= sequence.max_tokens:
                self._release(slot, End("length"))

    def _report_reading(self, sequences: list[Sequence]) -> None:
        """Tell the readers of prompts that take more than one step how far they got: at once
        after the first step, then at most every PROGRESS_EVERY_S, and once at the end, so the
        reports of one answer count up to its whole prompt. A prompt read in one step (most of
        them) reports nothing."""
        now = time.monotonic()
        for sequence in sequences:
            whole = not sequence._pending
            last = sequence._progress_at
            if whole and last is None:
                continue
            if whole or last is None or now - last >= PROGRESS_EVERY_S:
                sequence._progress_at = now
                self._outbox.append(
                    (sequence, PromptProgress(sequence._n_past, len(sequence.prompt)))
                )

    def _write_forced(self, slot: _Slot, forced: list[int]) -> None:
        """The sampled token is dropped and the forced ones are read like a prompt chunk;
        the sampler chain hears them so that penalties count them (a grammar cannot be used
        with forcing: `inference.engine` refuses a budget beside one)."""
        sequence = slot.sequence
        assert sequence is not None
        room = sequence.max_tokens - sequence.completion_tokens
        forced = forced[: max(room, 0)]
        for token in forced:
            llama_cpp.llama_sampler_accept(sequence._chain, token)
            sequence.completion_tokens += 1
            self._outbox.append((sequence, token))
        sequence._pending = list(forced)
        if not forced or sequence.completion_tokens >= sequence.max_tokens:
            self._release(slot, End("length"))
