"""RQ jobs of the chat app, and its hooks in the inference worker (`WIZ_WORKER_HOOKS`). A job
is like an endpoint: it takes ids, loads rows, calls a service."""

from __future__ import annotations

import logging

import redis
from rq import get_current_job

from chat.frames import broadcast
from chat.generation import generation_run
from chat.models import Message
from chat.options import options_stored_read
from chat.queue import generations_reap, generations_reap_namesake
from chat.titles import title_write
from inference.presence import PROCESS_RUN
from wizweb.channels_sender import channel_sender

log = logging.getLogger(__name__)


def generate_message(message_id: str) -> None:
    """Generate the answer of one assistant message (runs on an inference worker)."""
    job = get_current_job()
    assert job is not None
    stored = Message.objects.values_list("options", "parsed_options").filter(pk=message_id).first()
    if stored is None:
        return  # its conversation was deleted while it waited in the queue
    given, parsed = stored
    generation_run(
        message_id=message_id,
        options=options_stored_read(parsed, given=given),
        sender=channel_sender,
        connection=job.connection,
        worker_name=job.worker_name or "",
        # SimpleWorker runs the job in the worker's own process: this is the worker's run.
        worker_run=PROCESS_RUN,
    )


def conversation_title_write(conversation_id: str) -> None:
    """Have the model title a conversation after its first answer (background work on an
    inference worker, see chat.titles). A failure keeps the first words as the title and is
    only logged: nobody is waiting for it."""
    try:
        title_write(conversation_id=conversation_id, sender=channel_sender)
    except Exception:
        log.warning("No title for conversation %s", conversation_id, exc_info=True)


def worker_reap(*, connection: redis.Redis) -> None:
    """Every few seconds on each worker: fail the answers whose writer is gone."""
    broadcast(generations_reap(connection=connection))


def worker_reap_namesake(*, connection: redis.Redis, worker: str, run: str) -> None:
    """At a worker's start: fail the answers an earlier process of its name was writing."""
    broadcast(generations_reap_namesake(connection=connection, worker=worker, run=run))
