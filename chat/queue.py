"""The queue of generations: where a job goes (a pinned model's queues or the shared ones),
the order workers take them in, positions and wait estimates, abort, and mending what dead
workers and a restarted Redis leave behind (the reaper)."""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Case, QuerySet, Value, When
from django.utils import timezone
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from chat.errors import ChatError
from chat.frames import Broadcast, DoneFrame, QueuedFrame, message_group
from chat.generation_log import generation_log
from chat.metrics import generation_observe
from chat.models import Conversation, Message
from chat.streams import (
    CHUNK_LOG_TTL,
    abort_channel,
    abort_key,
    chunk_log_key,
    chunk_log_read,
)
from inference.presence import (
    PRESENCE_TTL,
    PRIORITIES,
    generation_queue_name,
    pinned_workers_for,
    worker_is_alive,
    worker_process_gone,
    worker_state_get,
    worker_states,
)
from usage.recording import usage_record
from wizweb.redis_server import redis_connection


def _queued_in_order() -> QuerySet[Message]:
    """Queued generations in the order workers take them: by tier, then oldest first."""
    rank = Case(
        *(When(priority=p, then=Value(i)) for i, p in enumerate(PRIORITIES)),
        default=Value(1),
    )
    return (
        Message.objects.filter(state=Message.State.QUEUED, role=Message.Role.ASSISTANT)
        .annotate(rank=rank)
        .order_by("rank", "created_at")
    )


def queue_position(message: Message) -> int:
    """1 for the next generation to start."""
    ids = list(_queued_in_order().values_list("id", flat=True))
    return ids.index(message.id) + 1 if message.id in ids else 1


# How many recent answers the queue's wait estimate takes the length of an answer from.
WAIT_ESTIMATE_ANSWERS = 50


def queue_seconds_per_answer() -> float | None:
    """How long the queue takes to move up one place, from the measured speed: the live
    workers' tokens per second (every answer they write, together) over the mean length of
    recent answers. None while no worker is writing (the speed is unknown then)."""
    speed = sum(state.tokens_per_s for state in worker_states(redis_connection()))
    if speed <= 0:
        return None
    recent = (
        Message.objects.filter(
            role=Message.Role.ASSISTANT, state=Message.State.DONE, completion_tokens__gt=0
        )
        .order_by("-created_at")
        .values_list("completion_tokens", flat=True)[:WAIT_ESTIMATE_ANSWERS]
    )
    lengths = [length for length in recent if length]
    # With no answer written yet, the usual answer's length is its longest.
    length = sum(lengths) / len(lengths) if lengths else settings.WIZ_DEFAULT_MAX_TOKENS
    return length / speed


def _queued_frame(message_id: uuid.UUID, position: int, per_answer: float | None) -> QueuedFrame:
    # Each place ahead is an answer to finish first, so `position` answers' time.
    eta = None if per_answer is None else max(1, round(position * per_answer))
    return {"type": "queued", "message": str(message_id), "position": position, "eta_s": eta}


def queued_frame(message_id: uuid.UUID | str) -> QueuedFrame | None:
    """The `queued` frame of a generation still waiting, for a socket that subscribes to it
    (a page loaded or reconnected while it waits); None once it has started."""
    message = Message.objects.filter(pk=message_id, state=Message.State.QUEUED).first()
    if message is None:
        return None
    return _queued_frame(message.id, queue_position(message), queue_seconds_per_answer())


def queue_position_frames() -> list[Broadcast]:
    """A `queued` frame for every waiting generation, for its group (positions shift when one
    starts, is aborted, or a higher tier arrives)."""
    ids = list(_queued_in_order().values_list("id", flat=True))
    if not ids:
        return []
    per_answer = queue_seconds_per_answer()
    return [
        (message_group(mid), _queued_frame(mid, position, per_answer))
        for position, mid in enumerate(ids, start=1)
    ]


def queues_model(connection: redis.Redis, model_id: int | None) -> int | None:
    """Whose queues a job for this model goes to: the model's own when a worker is pinned to
    it, else (None) the shared ones (any unpinned worker may load the model within its memory
    budget)."""
    if model_id is not None and pinned_workers_for(connection, model_id):
        return model_id
    return None


def message_enqueue(message: Message) -> None:
    """Put a queued answer's job on the queue of its tier (and model, when pinned)."""
    connection = redis_connection()
    name = generation_queue_name(message.priority, queues_model(connection, message.model_id))
    Queue(name, connection=connection).enqueue(
        "chat.jobs.generate_message",
        str(message.id),
        job_id=str(message.id),
        job_timeout=settings.WIZ_GENERATION_TIMEOUT,
        # Whose it is, for the worker's share of slots per person (inference.worker).
        meta={"owner": str(message.conversation.owner_id)},
        result_ttl=600,
        failure_ttl=86400,
    )


def message_abort(*, user: User, message_id: uuid.UUID) -> Message:
    """Stop a generation: a queued one leaves the queue, a running one stops within a token."""
    with transaction.atomic():
        message = (
            Message.objects.select_for_update()
            .filter(pk=message_id, conversation__owner=user, role=Message.Role.ASSISTANT)
            .first()
        )
        if message is None:
            raise ChatError("not_found", "That message does not exist or is not yours.")
        if message.state == Message.State.QUEUED:
            message.finish(state=Message.State.ABORTED, content="", finish_reason="aborted")
            was_queued = True
        else:
            was_queued = False
    connection = redis_connection()
    if was_queued:
        # Gone already, or not enqueued yet: the job skips a message that is not queued.
        with contextlib.suppress(NoSuchJobError):
            Job.fetch(str(message.id), connection=connection).cancel()
    elif message.state == Message.State.RUNNING:
        # The key covers a worker that has not started listening yet; the message is immediate.
        connection.set(abort_key(message.id), 1, ex=3600)
        connection.publish(abort_channel(message.id), 1)
    return message


WORKER_LOST_ERROR = (
    "The worker writing this answer stopped (it was killed or crashed); the text so far is "
    "kept. Send the prompt again to try once more."
)
ANSWER_UNSAVED_ERROR = (
    "The worker could not save the end of this answer (the database did not answer for too "
    "long); the text so far is kept. Send the prompt again to try once more."
)
HIDDEN_CONVERSATION_TTL = timedelta(hours=1)
# A queued message younger than this may still be on its way into the queue (on_commit).
REQUEUE_GRACE = timedelta(seconds=10)
# How long a running answer may be out of its live worker's presence record before it is taken
# for lost: far longer than the second between two records.
ORPHAN_GRACE = timedelta(seconds=30)


def _job_mark_failed(connection: redis.Redis, job_id: str, reason: str) -> None:
    """Move a dead worker's job from rq's started registry to its failed one, at once instead
    of after its heartbeat expires (the job's timeout plus a minute)."""
    try:
        job = Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        return
    started = StartedJobRegistry(job.origin, connection=connection)
    pipe = connection.pipeline()
    started.remove_executions(job, pipeline=pipe)
    job.set_status(JobStatus.FAILED, pipeline=pipe)
    FailedJobRegistry(job.origin, connection=connection).add(job, exc_string=reason, pipeline=pipe)
    pipe.execute()


def _why_lost(connection: redis.Redis, message: Message, now: datetime) -> str:
    """Why nobody is writing this running answer any more, or "" while somebody is."""
    if not message.worker_run:
        # Started before runs were recorded: only the name can tell.
        return "" if worker_is_alive(connection, message.worker) else WORKER_LOST_ERROR
    state = worker_state_get(connection, message.worker)
    if state is None or state.run != message.worker_run:
        return WORKER_LOST_ERROR  # its process is gone, whether or not a namesake took its place
    if worker_process_gone(state):
        return WORKER_LOST_ERROR  # it ran on this host and died: no need to wait for the expiry
    # Its process lives but writes something else: the end of this answer could not be saved.
    # The grace covers a job that started since the worker's last beat.
    started = message.started_at or message.created_at
    if str(message.id) not in state.messages and started < now - ORPHAN_GRACE:
        return ANSWER_UNSAVED_ERROR
    return ""


def _generation_fail_lost(
    connection: redis.Redis, message: Message, error: str = WORKER_LOST_ERROR
) -> DoneFrame | None:
    """Fail a running answer whose writer is gone, keeping the text its chunk log holds; its
    `done` frame, or None if it had finished meanwhile."""
    chunks = chunk_log_read(connection, message.id, 0)
    content = "".join(text for channel, text in chunks if channel == "content")
    reasoning = "".join(text for channel, text in chunks if channel == "reasoning")
    with transaction.atomic():  # the failure and its count in the usage table, or neither
        failed = Message.objects.filter(pk=message.pk, state=Message.State.RUNNING).update(
            state=Message.State.FAILED,
            content=content,
            reasoning=reasoning,
            finish_reason="error",
            error=error,
            finished_at=timezone.now(),
        )
        if not failed:
            return None
        message.refresh_from_db()
        usage_record(message)
    generation_log(message)
    generation_observe(message)
    # What the writer would have done at the end: the log expires like any answer's, and an
    # abort asked of it no longer has anyone to stop.
    pipe = connection.pipeline(transaction=False)
    pipe.expire(chunk_log_key(message.id), CHUNK_LOG_TTL)
    pipe.delete(abort_key(message.id))
    pipe.execute()
    _job_mark_failed(connection, str(message.id), error)
    return message.done_frame()


def _redis_is_settling(connection: redis.Redis) -> bool:
    """A Redis that has just (re)started has not got every live worker's presence record back
    yet (they are written every second): their answers must not be taken for lost."""
    info: dict[str, Any] = connection.info("server")  # type: ignore[assignment]
    return int(info.get("uptime_in_seconds", PRESENCE_TTL)) < PRESENCE_TTL


def generations_reap(*, connection: redis.Redis) -> list[Broadcast]:
    """Mend what dead workers and a restarted Redis leave behind; returns the frames to send.

    A running generation whose writer is gone (its worker's process stopped beating, or beats
    without writing it) is marked failed, keeping the text its chunk log holds. A queued one
    whose job is gone from Redis is queued again.
    """
    frames: list[Broadcast] = []
    now = timezone.now()
    if not _redis_is_settling(connection):
        for message in Message.objects.filter(state=Message.State.RUNNING):
            error = _why_lost(connection, message, now)
            frame = _generation_fail_lost(connection, message, error) if error else None
            if frame is not None:
                frames.append((message_group(message.id), frame))
    stale = Message.objects.filter(
        state=Message.State.QUEUED, role=Message.Role.ASSISTANT, created_at__lt=now - REQUEUE_GRACE
    )
    for message in stale:
        if not Job.exists(str(message.id), connection=connection):
            message_enqueue(message)
        else:
            _route_to_pinned(connection, message)
    # API calls kept out of history whose client went away before they were discarded.
    Conversation.objects.filter(
        in_history=False, updated_at__lt=now - HIDDEN_CONVERSATION_TTL
    ).exclude(messages__state__in=(Message.State.QUEUED, Message.State.RUNNING)).delete()
    return frames


def _route_to_pinned(connection: redis.Redis, message: Message) -> None:
    """A prompt sent while no worker was pinned to its model waits in the shared queues, which
    a pinned worker does not serve (its worker may be on another machine, stopped for a while):
    once one is back, move the prompt to the model's own queue, unless a worker took it."""
    if message.model_id is None or not pinned_workers_for(connection, message.model_id):
        return
    shared = Queue(generation_queue_name(message.priority), connection=connection)
    if shared.remove(str(message.id)):
        message_enqueue(message)


def generations_reap_namesake(*, connection: redis.Redis, worker: str, run: str) -> list[Broadcast]:
    """Fail at once the answers an earlier process of this worker was writing: called by a
    worker at its start, once it knows no other process of its name is alive."""
    frames: list[Broadcast] = []
    running = Message.objects.filter(state=Message.State.RUNNING, worker=worker)
    for message in running.exclude(worker_run=run):
        frame = _generation_fail_lost(connection, message)
        if frame is not None:
            frames.append((message_group(message.id), frame))
    return frames
