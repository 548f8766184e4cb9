"""The batched scheduler on the real default model: answers decoded together, each as it
would be alone; aborts, preemption, shares, prefix reuse and chunked prefill."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest
from django.conf import settings
from llama_cpp._internals import LlamaModel

from inference.prefix_cache import PrefixCache
from inference.requests import PromptProgress
from inference.sampling import Sampling
from inference.scheduler import MIN_CHUNK, Scheduler, Sequence
from wizweb.default_model import default_model_path

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaModel]:
    path = default_model_path(Path(settings.MODELS_DIR))
    loaded = LlamaModel(
        path_model=str(path), params=llama_cpp.llama_model_default_params(), verbose=False
    )
    yield loaded
    loaded.close()


def prompt(model: LlamaModel, text: str) -> list[int]:
    chat = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    return model.tokenize(chat.encode(), add_bos=False, special=True)


QUESTIONS = [f"Tell me fact number {i} about the sea." for i in range(8)]
SAMPLED = Sampling(temperature=1.0, seed=7)


def run_alone(model: LlamaModel, tokens: list[int], sampling: Sampling, n: int) -> list[int]:
    scheduler = Scheduler(model.model, n_ctx=1024, parallel=1, unified=False)
    try:
        sequence = scheduler.submit(Sequence(tokens, sampling, max_tokens=n))
        return list(sequence.tokens(timeout=120))
    finally:
        scheduler.close()


def run_after(
    model: LlamaModel, first: list[int], tokens: list[int], sampling: Sampling, n: int
) -> list[int]:
    """`tokens` run alone in the slot `first` was read in: the prefix they share is kept and
    the rest read on its own, split as a prompt that reuses a cached prefix is."""
    scheduler = Scheduler(model.model, n_ctx=1024, parallel=1, unified=False)
    try:
        list(scheduler.submit(Sequence(first, sampling, max_tokens=1)).tokens(timeout=120))
        sequence = scheduler.submit(Sequence(tokens, sampling, max_tokens=n))
        result = list(sequence.tokens(timeout=120))
        assert sequence.cached_tokens > 0
        return result
    finally:
        scheduler.close()


def collect(sequences: list[Sequence]) -> list[list[int]]:
    results: list[list[int]] = [[] for _ in sequences]

    def read(index: int) -> None:
        results[index] = list(sequences[index].tokens(timeout=120))

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(sequences))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_eight_answers_run_together_and_each_equals_its_run_alone(model: LlamaModel) -> None:
    scheduler = Scheduler(model.model, n_ctx=8 * 512, parallel=8, unified=False)
    try:
        sequences = [
            scheduler.submit(Sequence(prompt(model, q), SAMPLED, max_tokens=24)) for q in QUESTIONS
        ]
        together = collect(sequences)
    finally:
        scheduler.close()
    first_tokens = [s.first_token_at for s in sequences]
    ends = [s.first_token_at for s in sequences]
    assert all(t is not None for t in first_tokens)
    # Every answer had its first token before any answer had its last.
    assert max(first_tokens) <= min(e for e in ends if e is not None) + 60  # sanity
    assert scheduler.steps < sum(len(t) for t in together), "decoded together, not in turn"
    for question, tokens in zip(QUESTIONS, together, strict=True):
        assert tokens == run_alone(model, prompt(model, question), SAMPLED, 24), question


def test_an_aborted_answer_leaves_the_others_intact(model: LlamaModel) -> None:
    scheduler = Scheduler(model.model, n_ctx=3 * 512, parallel=3, unified=False)
    try:
        sequences = [
            scheduler.submit(Sequence(prompt(model, q), SAMPLED, max_tokens=24))
            for q in QUESTIONS[:3]
        ]
        stream = sequences[1].tokens(timeout=120)
        next(stream)
        sequences[1].abort()
        rest = list(stream)
        others = collect([sequences[0], sequences[2]])
    finally:
        scheduler.close()
    assert sequences[1].end is not None and sequences[1].end.reason == "aborted"
    assert len(rest) < 23
    for question, tokens in zip([QUESTIONS[0], QUESTIONS[2]], others, strict=True):
        assert tokens == run_alone(model, prompt(model, question), SAMPLED, 24)


def test_a_higher_tier_pauses_the_newest_lowest_and_the_paused_one_ends_the_same(
    model: LlamaModel,
) -> None:
    scheduler = Scheduler(model.model, n_ctx=2 * 512, parallel=2, unified=False)
    try:
        low = [
            scheduler.submit(Sequence(prompt(model, q), SAMPLED, tier=2, max_tokens=40))
            for q in QUESTIONS[:2]
        ]
        streams = [s.tokens(timeout=120) for s in low]
        early = [[next(stream) for _ in range(5)] for stream in streams]
        high = scheduler.submit(Sequence(prompt(model, QUESTIONS[2]), SAMPLED, tier=0))
        high.max_tokens = 8
        high_tokens = list(high.tokens(timeout=120))
        rest = collect(low)
    finally:
        scheduler.close()
    # The newer low answer was paused while the high one ran, then resumed.
    assert low[1].preemptions == 1 and low[0].preemptions == 0
    assert high.first_token_at is not None and low[1].first_token_at is not None
    assert high_tokens == run_alone(model, prompt(model, QUESTIONS[2]), SAMPLED, 8)
    for question, first, last in zip(QUESTIONS[:2], early, rest, strict=True):
        assert first + last == run_alone(model, prompt(model, question), SAMPLED, 40)


def test_no_owner_holds_more_than_their_share_while_others_wait(model: LlamaModel) -> None:
    scheduler = Scheduler(model.model, n_ctx=4 * 256, parallel=4, unified=False)
    greedy = Sampling(temperature=0.0)
    try:
        hog = [
            Sequence(prompt(model, q), greedy, owner="hog", max_tokens=30) for q in QUESTIONS[:4]
        ]
        other = Sequence(prompt(model, QUESTIONS[5]), greedy, owner="other", max_tokens=4)
        with scheduler._lock:  # both arrive in the same moment
            for sequence in [*hog, other]:
                scheduler.submit(sequence)
        collect([*hog, other])
    finally:
        scheduler.close()
    started = sorted([*hog, other], key=lambda s: s.started_at or 0)
    # The share of four slots is two: the other owner's answer starts third, before the
    # hog's third and fourth, although it arrived last.
    assert started.index(other) == 2


def test_a_follow_up_reads_only_what_is_new(model: LlamaModel) -> None:
    scheduler = Scheduler(model.model, n_ctx=2 * 1024, parallel=2, unified=False)
    greedy = Sampling(temperature=0.0)
    try:
        first_prompt = prompt(model, "Name a fruit.")
        first = scheduler.submit(Sequence(first_prompt, greedy, max_tokens=12))
        answer = list(first.tokens(timeout=120))
        follow_up = first_prompt + answer + prompt(model, "And another one?")
        second = scheduler.submit(Sequence(follow_up, greedy, max_tokens=12))
        list(second.tokens(timeout=120))
    finally:
        scheduler.close()
    assert second.cached_tokens >= len(first_prompt) + len(answer) - 1
    assert second.cached_tokens < len(follow_up)


def test_a_follow_up_after_its_slot_was_taken_starts_from_host_memory(model: LlamaModel) -> None:
    """One slot, taken by other conversations in between: the first conversation's cache was
    saved to host memory, and its follow-up is read from there, giving the same answer as a
    follow-up read in full."""
    cache = PrefixCache(256 << 20)
    scheduler = Scheduler(model.model, n_ctx=1024, parallel=1, unified=False, prefix_cache=cache)
    greedy = Sampling(temperature=0.0)
    try:
        first_prompt = prompt(model, "Name a fruit and say why it is good for you.")
        answer = list(scheduler.submit(Sequence(first_prompt, greedy, max_tokens=40)).tokens(120))
        for question in QUESTIONS[:3]:
            list(scheduler.submit(Sequence(prompt(model, question), greedy, max_tokens=8)).tokens())
        follow_up = first_prompt + answer + prompt(model, "And another one?")
        second = scheduler.submit(Sequence(follow_up, greedy, max_tokens=16))
        restored = list(second.tokens(timeout=120))
    finally:
        scheduler.close()
    assert second.cached_tokens >= len(first_prompt) + len(answer) - 1
    stats = cache.stats()
    assert stats.restored == 1 and stats.saved >= 1
    assert stats.entries == 0, "a closed scheduler's entries are dropped"
    assert restored == run_alone(model, follow_up, greedy, 16)


def test_a_prompt_sharing_a_busy_slots_prefix_starts_from_a_copy(model: LlamaModel) -> None:
    """A long system prompt many conversations share is read once: the second conversation
    copies it from the slot of the first, still writing, and answers as if it had followed
    the first in its own slot (on CPUs whose kernels sum differently for a prompt read in two
    parts, that can differ from a read in full: see docs/architecture.md)."""
    scheduler = Scheduler(
        model.model, n_ctx=2 * 1024, parallel=2, unified=False, prefix_cache=PrefixCache(0)
    )
    greedy = Sampling(temperature=0.0)
    rules = " ".join(f"Rule {i}: answer kindly and briefly." for i in range(20))
    system = f"<|im_start|>system\n{rules}<|im_end|>\n"
    first = model.tokenize(system.encode(), add_bos=False, special=True) + prompt(model, "Hi.")
    second = model.tokenize(system.encode(), add_bos=False, special=True) + prompt(
        model, "Name a colour."
    )
    try:
        writer = scheduler.submit(Sequence(first, greedy, max_tokens=100))
        stream = writer.tokens(timeout=120)
        next(stream)
        copied = scheduler.submit(Sequence(second, greedy, max_tokens=12))
        tokens = list(copied.tokens(timeout=120))
        writer.abort()
        list(stream)
    finally:
        scheduler.close()
    shared = len(model.tokenize(system.encode(), add_bos=False, special=True))
    assert copied.cached_tokens >= shared > 100
    assert tokens == run_after(model, first, second, greedy, 12)


def tide_prompt(model: LlamaModel, lines: int) -> list[int]:
    """A pasted document of `lines` numbered lines (about 12 tokens each) to summarise."""
    document = " ".join(f"Line {i}: the tide comes in and goes out." for i in range(lines))
    return prompt(model, document + "\nSummarise this.")


def start_writer(
    scheduler: Scheduler, model: LlamaModel, max_tokens: int
) -> tuple[Sequence, Iterator[int]]:
    """A greedy answer streaming in `scheduler`, its first token already read."""
    writer = scheduler.submit(
        Sequence(prompt(model, QUESTIONS[0]), Sampling(temperature=0.0), max_tokens=max_tokens)
    )
    stream = writer.tokens(timeout=120)
    next(stream)
    return writer, stream


def test_a_long_prompt_is_read_in_chunks_while_others_keep_streaming(model: LlamaModel) -> None:
    scheduler = Scheduler(model.model, n_ctx=4 * 2560, parallel=4, unified=False, prefill_chunk=128)
    greedy = Sampling(temperature=0.0)
    try:
        writer, stream = start_writer(scheduler, model, 200)
        long_prompt = tide_prompt(model, 170)
        assert len(long_prompt) > 2000
        reader = scheduler.submit(Sequence(long_prompt, greedy, max_tokens=4))
        during = 0
        for _ in stream:
            if reader.first_token_at is not None:
                break
            during += 1
        writer.abort()
        list(stream)
        list(reader.tokens(timeout=120))
    finally:
        scheduler.close()
    # The writer got a token at every step of the long prompt's reading (16 chunks of 128).
    assert during >= len(long_prompt) // 128 - 1


def test_a_long_prompt_reports_its_reading_up_to_its_whole_length(model: LlamaModel) -> None:
    scheduler = Scheduler(model.model, n_ctx=2 * 2560, parallel=2, unified=False, n_batch=512)
    greedy = Sampling(temperature=0.0)
    try:
        long_prompt = tide_prompt(model, 170)
        assert len(long_prompt) > 4 * 512  # read in five steps or more
        reading = scheduler.submit(Sequence(long_prompt, greedy, max_tokens=3))
        events = list(reading.events(timeout=120))
        short = scheduler.submit(Sequence(prompt(model, QUESTIONS[1]), greedy, max_tokens=3))
        short_events = list(short.events(timeout=120))
    finally:
        scheduler.close()
    reports = [e for e in events if isinstance(e, PromptProgress)]
    first_token = next(i for i, e in enumerate(events) if not isinstance(e, PromptProgress))
    assert all(isinstance(e, PromptProgress) for e in events[:first_token])
    assert len(reports) == first_token, "every report comes before the first token"
    # Counting up, each report further than the one before, to the whole prompt.
    done = [r.done for r in reports]
    assert len(done) >= 2
    assert done == sorted(set(done))
    assert 0 < done[0] < len(long_prompt)
    assert done[-1] == len(long_prompt)
    assert {r.total for r in reports} == {len(long_prompt)}
    # A prompt read in one step says nothing.
    assert short_events and not any(isinstance(e, PromptProgress) for e in short_events)


@pytest.mark.parametrize(("target", "chunk"), [(1e-4, MIN_CHUNK), (60.0, 128)])
def test_the_prompt_chunk_follows_the_time_a_step_takes(
    model: LlamaModel, target: float, chunk: int
) -> None:
    """Steps that overrun the target shrink the chunk read beside a streaming answer (down to
    MIN_CHUNK); steps well within it keep the largest."""
    scheduler = Scheduler(
        model.model,
        n_ctx=2 * 2048,
        parallel=2,
        unified=False,
        prefill_chunk=128,
        step_target=target,
    )
    try:
        writer, stream = start_writer(scheduler, model, 300)
        long_prompt = tide_prompt(model, 60)
        assert len(long_prompt) > 600
        reader = scheduler.submit(Sequence(long_prompt, Sampling(temperature=0.0), max_tokens=6))
        assert list(reader.tokens(timeout=120))
        writer.abort()
        list(stream)
    finally:
        scheduler.close()
    assert scheduler.chunk == chunk


def test_a_unified_cache_lets_one_answer_use_the_whole_context(model: LlamaModel) -> None:
    scheduler = Scheduler(model.model, n_ctx=2048, parallel=8, unified=True)
    greedy = Sampling(temperature=0.0)
    document = " ".join(f"Line {i}: the tide comes in and goes out." for i in range(45))
    try:
        long_prompt = prompt(model, document)
        assert 512 < len(long_prompt) < 1024  # more than twice a split slot's 256
        sequence = scheduler.submit(Sequence(long_prompt, greedy, max_tokens=4))
        tokens = list(sequence.tokens(timeout=300))
    finally:
        scheduler.close()
    assert scheduler.n_ctx_seq == 2048
    assert sequence.end is not None and sequence.end.reason in ("stop", "length")
    assert tokens
