"""Prompts into the queue: a new prompt, a regenerated answer, an edited turn, an API request;
each routed to a model the user may use, held to the pending limit and the quotas, saved with
its queued answer in one transaction and enqueued when it commits (chat.queue)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from chat.attachments import Attachments, attachments_check
from chat.errors import ChatError
from chat.metrics import answer_requested
from chat.models import Conversation, Message
from chat.options import (
    GenerationOptions,
    options_model_check,
    options_stored,
)
from chat.queue import message_enqueue, queue_position
from models_admin.access import models_usable_by
from models_admin.models import LocalModel
from usage.quotas import QuotaExceeded, quota_take

TITLE_LENGTH = 60


@dataclass(frozen=True)
class Accepted:
    conversation: Conversation
    user_message: Message
    message: Message
    queue_position: int


def _model_for(options: GenerationOptions, user: User) -> LocalModel:
    """The model asked for, or the default; a model closed to `user` is one that does not
    exist (models_admin.access), so the refusal says nothing of it. Without a usable default,
    the first model the user may use."""
    usable = models_usable_by(user)
    if options.model:
        model = usable.filter(name=options.model).first()
    else:
        model = usable.filter(is_default=True).first() or usable.first()
    if model is None:
        if options.model:
            raise ChatError("model_not_found", f"There is no ready model named {options.model!r}.")
        raise ChatError("no_model", "No model is ready yet; ask an admin to add one.")
    options_model_check(options, model_name=model.name, thinks=model.template_abilities.thinks)
    return model


def _title_from(content: str) -> str:
    words = " ".join(content.split())
    return words if len(words) <= TITLE_LENGTH else words[: TITLE_LENGTH - 1].rstrip() + "…"


def _check_pending_limit(user: User) -> None:
    """Refuse past the pending limit; called inside the transaction that adds the answer.

    Counting and then inserting is a race between two requests of one user, so the user's row
    is locked first: a second submission waits here until the first has committed and then
    counts its answer. (SQLite has no row locks, but its transactions begin IMMEDIATE, see
    settings, so writers are serialized anyway.)"""
    User.objects.select_for_update().filter(pk=user.pk).first()
    pending = Message.objects.filter(
        conversation__owner=user,
        role=Message.Role.ASSISTANT,
        state__in=(Message.State.QUEUED, Message.State.RUNNING),
    ).count()
    limit = settings.WIZ_MAX_PENDING_PER_USER
    if pending >= limit:
        raise ChatError(
            "too_many_pending",
            f"You already have {pending} answers waiting or being written (the limit is "
            f"{limit}); wait for one to finish or stop one.",
        )


def _check_limits(user: User) -> None:
    """The pending limit, then the user's quotas (usage.quotas), which count this request:
    inside the transaction that adds the answer, so a refusal or a rollback counts nothing."""
    _check_pending_limit(user)
    try:
        quota_take(user=user)
    except QuotaExceeded as exc:
        raise ChatError("quota_exceeded", str(exc), retry_after=exc.retry_after) from None


@transaction.atomic
def prompt_submit(
    *,
    user: User,
    conversation_id: uuid.UUID | None,
    content: str,
    options: GenerationOptions,
    parent_id: uuid.UUID | None = None,
    attachments: Attachments | None = None,
) -> Accepted:
    """Save the user's turn and a queued assistant message; enqueue its generation on commit.

    The turn follows `parent_id` (the message shown last on the user's branch), or the newest
    message of the conversation. Its attachments are checked before anything is saved."""
    attachments = attachments or Attachments()
    attachments_check(user=user, attachments=attachments)
    model = _model_for(options, user)
    _check_limits(user)
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
        messages = conversation.messages.all()
        parent = (
            messages.filter(pk=parent_id).first()
            if parent_id
            else messages.order_by("-created_at").first()
        )
        if parent_id and parent is None:
            raise ChatError("not_found", "The message to follow is not in this conversation.")
    user_message = Message.objects.create(
        conversation=conversation,
        parent=parent,
        role=Message.Role.USER,
        content=content,
        attachments=attachments.stored(),
    )
    message = _answer_queue(user_message, model=model, options=options)
    return Accepted(conversation, user_message, message, queue_position(message))


def _owned_message(user: User, message_id: uuid.UUID, role: str) -> Message:
    message = (
        Message.objects.select_related("conversation", "parent")
        .filter(pk=message_id, conversation__owner=user, role=role)
        .first()
    )
    if message is None:
        raise ChatError("not_found", f"That {role} message does not exist or is not yours.")
    return message


@transaction.atomic
def message_regenerate(
    *, user: User, message_id: uuid.UUID, options: GenerationOptions
) -> Accepted:
    """A new answer to the same user turn, kept beside the old one (a sibling version). It
    reads the turn's attachments again: they live on the turn (chat.grounding)."""
    old = _owned_message(user, message_id, Message.Role.ASSISTANT)
    if old.parent is None:
        raise ChatError("not_found", "That answer has no user turn to answer again.")
    model = _model_for(options, user)
    _check_limits(user)
    message = _answer_queue(old.parent, model=model, options=options)
    return Accepted(old.conversation, old.parent, message, queue_position(message))


@transaction.atomic
def message_edit(
    *,
    user: User,
    message_id: uuid.UUID,
    content: str,
    options: GenerationOptions,
    attachments: Attachments | None = None,
) -> Accepted:
    """A new version of a user turn (a sibling of the old one) and a new answer to it. Without
    `attachments` (None) the new version keeps the old one's, checked again: a file may have
    been deleted or unshared since."""
    old = _owned_message(user, message_id, Message.Role.USER)
    if attachments is None:
        attachments = Attachments.of(old)
    attachments_check(user=user, attachments=attachments)
    model = _model_for(options, user)
    _check_limits(user)
    user_message = Message.objects.create(
        conversation=old.conversation,
        parent=old.parent,
        role=Message.Role.USER,
        content=content,
        attachments=attachments.stored(),
    )
    message = _answer_queue(user_message, model=model, options=options)
    return Accepted(old.conversation, user_message, message, queue_position(message))


def _answer_queue(
    parent: Message,
    *,
    model: LocalModel,
    options: GenerationOptions,
    mode: str = Message.Mode.CHAT,
) -> Message:
    """A queued assistant message answering `parent`, enqueued when the transaction commits."""
    stored_options = dict(options.given)
    stored_options["model"] = model.name
    message = Message.objects.create(
        conversation=parent.conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        state=Message.State.QUEUED,
        model=model,
        model_name=model.name,
        options=stored_options,
        parsed_options=options_stored(options),
        priority=options.priority,
        mode=mode,
    )
    parent.conversation.touch()
    transaction.on_commit(lambda: message_enqueue(message))
    transaction.on_commit(lambda: answer_requested(message))
    return message


@transaction.atomic
def api_request_submit(
    *,
    user: User,
    turns: list[dict[str, str]],
    options: GenerationOptions,
    mode: str = Message.Mode.CHAT,
    in_history: bool = False,
    attachments: Attachments | None = None,
) -> Message:
    """An API request: its turns saved as a new conversation, and a queued answer.

    Its attachments go with its last user turn. Without history the conversation is hidden
    from the user's lists and removed once the answer has been delivered (see
    `api_conversation_discard`)."""
    attachments = attachments or Attachments()
    attachments_check(user=user, attachments=attachments)
    model = _model_for(options, user)
    _check_limits(user)
    last_user = next((t["content"] for t in reversed(turns) if t["role"] == "user"), "API call")
    conversation = Conversation.objects.create(
        owner=user, title=_title_from(last_user), in_history=in_history
    )
    last_user_index = max((i for i, t in enumerate(turns) if t["role"] == "user"), default=-1)
    parent = None
    for index, turn in enumerate(turns):
        parent = Message.objects.create(
            conversation=conversation,
            parent=parent,
            role=turn["role"],
            content=turn["content"],
            attachments=attachments.stored() if index == last_user_index else {},
        )
    assert parent is not None
    return _answer_queue(parent, model=model, options=options, mode=mode)


def api_conversation_discard(*, message: Message) -> None:
    """Remove a finished API conversation that its key keeps out of the user's history."""
    Conversation.objects.filter(pk=message.conversation_id, in_history=False).exclude(
        messages__state__in=(Message.State.QUEUED, Message.State.RUNNING)
    ).delete()
