"""The queue: its order, positions and wait estimates, and the reaper mending what dead
workers and a restarted Redis leave behind."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rq import Queue
from rq.job import Job

from chat.models import Conversation, Message
from chat.queue import (
    ANSWER_UNSAVED_ERROR,
    WORKER_LOST_ERROR,
    generations_reap,
    queue_position_frames,
    queued_frame,
)
from chat.streams import abort_key, chunk_log_key
from inference.presence import (
    PRESENCE_TTL,
    WorkerState,
    generation_queue_name,
    worker_state_get,
    worker_state_publish,
    worker_state_remove,
    worker_states,
)
from tests.chat.test_submission import (  # noqa: F401 - an autouse fixture, used here too
    drop_queued_jobs,
    queues_no_worker_serves,
    submit,
)
from tests.processes import wait_for
from wizweb.redis_server import redis_connection

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def redis_settled() -> None:
    """The reaper leaves running answers alone while Redis is younger than PRESENCE_TTL (the
    workers' presence records are not all back yet); the test session's Redis may be that young."""

    def settled() -> bool:
        info: dict[str, Any] = redis_connection().info("server")  # type: ignore[assignment]
        return int(info["uptime_in_seconds"]) >= PRESENCE_TTL

    wait_for(settled, timeout=PRESENCE_TTL + 2, what="Redis to be older than PRESENCE_TTL")


def test_it_orders_the_queue_by_tier_then_age(owner: Any, default_model: Any) -> None:
    low = submit(owner, priority="low").message
    normal = submit(owner, priority="normal").message
    high = submit(owner, priority="high").message
    drop_queued_jobs()
    Message.objects.filter(pk__in=[low.pk, normal.pk, high.pk]).update(state="queued")
    frames = {f["message"]: f["position"] for _, f in queue_position_frames()}
    assert frames == {str(high.id): 1, str(normal.id): 2, str(low.id): 3}


@pytest.mark.usefixtures("redis_settled")
def test_it_fails_a_running_answer_whose_worker_is_gone_and_keeps_its_text(
    owner: Any, default_model: Any
) -> None:
    accepted = submit(owner)
    drop_queued_jobs()
    message = accepted.message
    Message.objects.filter(pk=message.pk).update(state="running", worker="vanished-worker")
    connection = redis_connection()
    connection.rpush(chunk_log_key(message.id), "Once upon", " a time")
    connection.set(abort_key(message.id), 1)
    frames = generations_reap(connection=connection)
    message.refresh_from_db()
    assert message.state == Message.State.FAILED
    assert message.content == "Once upon a time"
    assert message.error == WORKER_LOST_ERROR
    assert frames and frames[0][1]["finish_reason"] == "error"
    assert generations_reap(connection=connection) == []  # once only
    # Nobody else would ever expire the log or clear the abort flag of this answer.
    assert 0 < connection.ttl(chunk_log_key(message.id)) <= 3600
    assert not connection.exists(abort_key(message.id))


@pytest.mark.usefixtures("redis_settled")
def test_it_tells_a_dead_run_from_the_live_worker_of_the_same_name(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    live = worker_state_get(redis_connection(), "test-inference")
    assert live is not None and live.run
    messages = [submit(owner).message for _ in range(3)]
    drop_queued_jobs()
    earlier_run, just_started, lost = messages
    now = timezone.now()
    running = Message.objects.filter(pk__in=[m.pk for m in messages])
    running.update(state="running", worker="test-inference", worker_run=live.run, started_at=now)
    # A process of that name that died; the one beating now was started after it.
    running.filter(pk=earlier_run.pk).update(worker_run="0" * 16)
    # Its own run, but not what it reports writing for a long while: its end was never saved.
    running.filter(pk=lost.pk).update(started_at=now - timedelta(minutes=1))

    generations_reap(connection=redis_connection())
    states = {m.id: (m.state, m.error) for m in running}
    assert states == {
        earlier_run.id: (Message.State.FAILED, WORKER_LOST_ERROR),
        just_started.id: (Message.State.RUNNING, ""),
        lost.id: (Message.State.FAILED, ANSWER_UNSAVED_ERROR),
    }
    running.filter(pk=just_started.pk).update(state="done")


def test_it_queues_again_a_generation_whose_job_vanished(owner: Any, default_model: Any) -> None:
    accepted = submit(owner)
    drop_queued_jobs()  # as a restart of the private, memory-only Redis would
    connection = redis_connection()
    assert not Job.exists(str(accepted.message.id), connection=connection)
    Message.objects.filter(pk=accepted.message.pk).update(
        created_at=timezone.now() - timedelta(minutes=1)
    )
    generations_reap(connection=connection)
    queue = Queue(generation_queue_name("normal"), connection=connection)
    assert str(accepted.message.id) in queue.job_ids
    drop_queued_jobs()


def wait_for_idle_workers(timeout: float = 30) -> None:
    """Wait until no live worker reports a speed: one that wrote an answer for a test before
    counts it for a few seconds more, and a wait estimate here must be the test's own."""
    deadline = time.monotonic() + timeout
    while sum(state.tokens_per_s for state in worker_states(redis_connection())) > 0:
        assert time.monotonic() < deadline, "another worker is still writing"
        time.sleep(0.1)


def test_it_estimates_the_wait_in_the_queue_from_the_measured_speed(
    owner: Any, default_model: Any
) -> None:
    conversation = Conversation.objects.create(owner=owner)
    for length in (100, 200):
        Message.objects.create(
            conversation=conversation, role="assistant", state="done", completion_tokens=length
        )
    first = submit(owner).message
    second = submit(owner).message
    drop_queued_jobs()
    wait_for_idle_workers()
    # No worker writing: the speed is unknown, so no estimate.
    assert {f["eta_s"] for _, f in queue_position_frames()} == {None}

    connection = redis_connection()
    worker_state_publish(connection, WorkerState(name="measured", host="h", pid=1, tokens_per_s=10))
    try:
        # 150 tokens an answer at 10 tokens/s: 15 s a place.
        frames = {f["message"]: f for _, f in queue_position_frames()}
        assert frames[str(first.id)]["position"] == 1
        assert frames[str(first.id)]["eta_s"] == 15
        assert frames[str(second.id)]["eta_s"] == 30
        assert queued_frame(second.id) == frames[str(second.id)]
    finally:
        worker_state_remove(connection, "measured")
