"""Chat business logic: taking a prompt, aborting a generation."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass

import django_rq
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from rq.exceptions import NoSuchJobError
from rq.job import Job

from chat.models import Conversation, Message
from chat.options import GenerationOptions
from chat.streams import abort_key
from models_admin.models import LocalModel
from wizweb.redis_server import redis_connection

TITLE_LENGTH = 60
QUEUE_BY_PRIORITY = dict(zip(("high", "normal", "low"), settings.GENERATION_QUEUES, strict=True))


class ChatError(Exception):
    """A request that cannot be served; `code` and the message go to the client as they are."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class Accepted:
    conversation: Conversation
    user_message: Message
    message: Message
    queue_position: int


def max_priority_for(user: User) -> str:
    return "high" if getattr(user, "is_staff", False) else "normal"


def _model_for(options: GenerationOptions) -> LocalModel:
    ready = LocalModel.objects.filter(state=LocalModel.State.READY)
    model = (
        ready.filter(name=options.model).first()
        if options.model
        else ready.filter(is_default=True).first()
    )
    if model is None:
        if options.model:
            raise ChatError("model_not_found", f"There is no ready model named {options.model!r}.")
        raise ChatError("no_model", "No model is ready yet; ask an admin to add one.")
    return model


def _title_from(content: str) -> str:
    words = " ".join(content.split())
    return words if len(words) <= TITLE_LENGTH else words[: TITLE_LENGTH - 1].rstrip() + "…"


def queue_position(message: Message) -> int:
    """1 for the next generation to start; counts the queued ones ahead of this one."""
    ahead = Message.objects.filter(
        state=Message.State.QUEUED, role=Message.Role.ASSISTANT, created_at__lt=message.created_at
    ).count()
    return ahead + 1


def _enqueue(message: Message, priority: str) -> None:
    queue = django_rq.get_queue(QUEUE_BY_PRIORITY[priority])
    queue.enqueue(
        "chat.jobs.generate_message",
        str(message.id),
        job_id=str(message.id),
        job_timeout=settings.RQ_QUEUES[queue.name]["DEFAULT_TIMEOUT"],
        result_ttl=600,
        failure_ttl=86400,
    )


@transaction.atomic
def prompt_submit(
    *,
    user: User,
    conversation_id: uuid.UUID | None,
    content: str,
    options: GenerationOptions,
) -> Accepted:
    """Save the user's turn and a queued assistant message; enqueue its generation on commit."""
    model = _model_for(options)
    if conversation_id is None:
        conversation = Conversation.objects.create(owner=user, title=_title_from(content))
        parent = None
    else:
        found = (
            Conversation.objects.select_for_update().filter(owner=user, pk=conversation_id).first()
        )
        if found is None:
            raise ChatError("not_found", "That conversation does not exist or is not yours.")
        conversation = found
        parent = conversation.messages.order_by("-created_at").first()
    stored_options = dict(options.given)
    stored_options["model"] = model.name
    user_message = Message.objects.create(
        conversation=conversation, parent=parent, role=Message.Role.USER, content=content
    )
    message = Message.objects.create(
        conversation=conversation,
        parent=user_message,
        role=Message.Role.ASSISTANT,
        state=Message.State.QUEUED,
        model=model,
        model_name=model.name,
        options=stored_options,
    )
    conversation.touch()
    transaction.on_commit(lambda: _enqueue(message, options.priority))
    return Accepted(conversation, user_message, message, queue_position(message))


def message_abort(*, user: User, message_id: uuid.UUID) -> Message:
    """Stop a generation: a queued one leaves the queue, a running one stops at its next chunk."""
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
        connection.set(abort_key(message.id), 1, ex=3600)
    return message
