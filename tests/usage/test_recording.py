"""The usage table (usage.recording): every answer's end is counted once, with its real token
counts and time to first token, in the transaction that saves it; the reaper's failures too."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection as db_connection
from django.test import override_settings
from rq import Queue

from chat.models import Message
from chat.options import options_parse
from chat.queue import generations_reap_namesake, message_abort
from chat.submission import prompt_submit
from inference.presence import generation_queue_name
from usage.models import DailyUsage
from usage.recording import ttft_bucket, ttft_bucket_ms
from usage.selectors import ttft_p95_ms
from wizweb.redis_server import redis_connection

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def queues_no_worker_serves() -> Iterator[None]:
    # The session's inference worker may be running: these answers are ended by the test.
    with override_settings(GENERATION_QUEUES=["idle-high", "idle", "idle-low"]):
        yield
    connection = redis_connection()
    for priority in ("high", "normal", "low"):
        Queue(generation_queue_name(priority), connection=connection).empty()


def queued_answer(user: Any) -> Message:
    accepted = prompt_submit(
        user=user, conversation_id=None, content="hi", options=options_parse({})
    )
    return accepted.message


def test_it_buckets_times_to_first_token_within_a_tenth() -> None:
    for ms in (0.5, 10, 11, 95.3, 1234.5, 60_000):
        bucket = ttft_bucket(ms)
        assert ms <= ttft_bucket_ms(bucket) * (1 + 1e-9)
        assert bucket == 0 or ttft_bucket_ms(bucket - 1) < ms
    assert ttft_p95_ms([]) is None
    # 19 fast answers and one slow: the 95th percentile is the 19th, a fast one.
    fast, slow = str(ttft_bucket(50)), str(ttft_bucket(5000))
    assert ttft_p95_ms([{fast: 10}, {fast: 9, slow: 1}]) == round(ttft_bucket_ms(int(fast)), 1)
    assert ttft_p95_ms([{fast: 18, slow: 2}]) == round(ttft_bucket_ms(int(slow)), 1)


def test_it_adds_each_finished_answer_to_its_users_row_for_the_model_and_day(
    owner: Any, outsider: Any, default_model: Any
) -> None:
    for prompt, completion, ttft in ((30, 5, 80.0), (40, 7, 120.0)):
        message = queued_answer(owner)
        assert message.start(worker="w", run="r")
        message.finish(
            state=Message.State.DONE,
            content="ok",
            finish_reason="stop",
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=3,
            timings={"ttft_ms": ttft},
        )
    other = queued_answer(outsider)
    other.finish(state=Message.State.DONE, content="x", finish_reason="stop", prompt_tokens=1)
    row = DailyUsage.objects.get(user=owner)
    assert (row.answers, row.failed) == (2, 0)
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (70, 12, 6)
    assert row.model_name == default_model.name
    assert sum(row.ttft_buckets.values()) == 2
    assert DailyUsage.objects.get(user=outsider).prompt_tokens == 1


def test_it_counts_an_answer_once_even_if_its_end_is_saved_twice(
    owner: Any, default_model: Any
) -> None:
    message = queued_answer(owner)
    message.finish(state=Message.State.DONE, content="a", finish_reason="stop", prompt_tokens=5)
    message.conversation.delete()  # a later save finds no row and counts nothing
    assert not message.finish(state=Message.State.DONE, content="a", finish_reason="stop")
    assert DailyUsage.objects.get(user=owner).answers == 1


def test_an_answer_aborted_in_the_queue_counts_as_an_answer_without_tokens(
    owner: Any, default_model: Any
) -> None:
    message = queued_answer(owner)
    message_abort(user=owner, message_id=message.id)
    row = DailyUsage.objects.get(user=owner)
    assert (row.answers, row.prompt_tokens, row.completion_tokens) == (1, 0, 0)


def test_the_reaper_counts_an_answer_it_fails(owner: Any, default_model: Any) -> None:
    message = queued_answer(owner)
    assert message.start(worker="ghost", run="dead-run")
    frames = generations_reap_namesake(connection=redis_connection(), worker="ghost", run="new-run")
    assert len(frames) == 1
    row = DailyUsage.objects.get(user=owner)
    assert (row.answers, row.failed) == (1, 1)


@override_settings(WIZ_MAX_PENDING_PER_USER=50)
def test_answers_ending_at_once_are_all_counted(owner: Any, default_model: Any) -> None:
    messages = [queued_answer(owner) for _ in range(12)]
    start = threading.Barrier(len(messages))

    def finish(message: Message) -> bool:
        try:
            start.wait()
            return message.finish(
                state=Message.State.DONE,
                content="ok",
                finish_reason="stop",
                prompt_tokens=10,
                completion_tokens=3,
                timings={"ttft_ms": 50.0},
            )
        finally:
            db_connection.close()

    with ThreadPoolExecutor(len(messages)) as pool:
        assert all(pool.map(finish, messages))
    row = DailyUsage.objects.get(user=owner)
    assert (row.answers, row.prompt_tokens, row.completion_tokens) == (12, 120, 36)
    assert row.ttft_buckets == {str(ttft_bucket(50.0)): 12}
