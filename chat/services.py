"""Chat business logic: prompts and API requests into the queue (routed, limited, positioned),
aborts, and mending what dead workers and a restarted Redis leave behind."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Case, QuerySet, Value, When
from django.utils import timezone
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from chat.generation_log import generation_log
from chat.metrics import answer_requested, generation_observe
from chat.models import Conversation, ConversationShare, Message, SystemPromptPreset
from chat.options import (
    MAX_SYSTEM_PROMPT_CHARS,
    GenerationOptions,
    InvalidOptions,
    options_model_check,
    options_parse,
    options_stored,
)
from chat.streams import (
    CHUNK_LOG_TTL,
    abort_channel,
    abort_key,
    chunk_log_key,
    chunk_log_read,
    message_group,
    user_group,
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
from models_admin.access import models_usable_by
from models_admin.models import LocalModel
from usage.quotas import QuotaExceeded, quota_take
from usage.recording import usage_record
from wizweb.redis_server import redis_connection

TITLE_LENGTH = 60


class ChatError(Exception):
    """A request that cannot be served; `code` and the message go to the client as they are."""

    def __init__(self, code: str, message: str, *, retry_after: int | None = None) -> None:
        self.code = code
        # Seconds until the request could succeed, when that is known (quota_exceeded).
        self.retry_after = retry_after
        super().__init__(message)


@dataclass(frozen=True)
class Accepted:
    conversation: Conversation
    user_message: Message
    message: Message
    queue_position: int


def max_priority_for(user: User) -> str:
    return "high" if getattr(user, "is_staff", False) else "normal"


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


def _queued_frame(message_id: uuid.UUID, position: int, per_answer: float | None) -> dict[str, Any]:
    # Each place ahead is an answer to finish first, so `position` answers' time.
    eta = None if per_answer is None else max(1, round(position * per_answer))
    return {"type": "queued", "message": str(message_id), "position": position, "eta_s": eta}


def queued_frame(message_id: uuid.UUID | str) -> dict[str, Any] | None:
    """The `queued` frame of a generation still waiting, for a socket that subscribes to it
    (a page loaded or reconnected while it waits); None once it has started."""
    message = Message.objects.filter(pk=message_id, state=Message.State.QUEUED).first()
    if message is None:
        return None
    return _queued_frame(message.id, queue_position(message), queue_seconds_per_answer())


def queue_position_frames() -> list[tuple[str, dict[str, Any]]]:
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


def _enqueue(message: Message) -> None:
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
) -> Accepted:
    """Save the user's turn and a queued assistant message; enqueue its generation on commit.

    The turn follows `parent_id` (the message shown last on the user's branch), or the newest
    message of the conversation."""
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
        conversation=conversation, parent=parent, role=Message.Role.USER, content=content
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
    """A new answer to the same user turn, kept beside the old one (a sibling version)."""
    old = _owned_message(user, message_id, Message.Role.ASSISTANT)
    if old.parent is None:
        raise ChatError("not_found", "That answer has no user turn to answer again.")
    model = _model_for(options, user)
    _check_limits(user)
    message = _answer_queue(old.parent, model=model, options=options)
    return Accepted(old.conversation, old.parent, message, queue_position(message))


@transaction.atomic
def message_edit(
    *, user: User, message_id: uuid.UUID, content: str, options: GenerationOptions
) -> Accepted:
    """A new version of a user turn (a sibling of the old one) and a new answer to it."""
    old = _owned_message(user, message_id, Message.Role.USER)
    model = _model_for(options, user)
    _check_limits(user)
    user_message = Message.objects.create(
        conversation=old.conversation, parent=old.parent, role=Message.Role.USER, content=content
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
    transaction.on_commit(lambda: _enqueue(message))
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
) -> Message:
    """An API request: its turns saved as a new conversation, and a queued answer.

    Without history the conversation is hidden from the user's lists and removed once the
    answer has been delivered (see `api_conversation_discard`)."""
    model = _model_for(options, user)
    _check_limits(user)
    last_user = next((t["content"] for t in reversed(turns) if t["role"] == "user"), "API call")
    conversation = Conversation.objects.create(
        owner=user, title=_title_from(last_user), in_history=in_history
    )
    parent = None
    for turn in turns:
        parent = Message.objects.create(
            conversation=conversation, parent=parent, role=turn["role"], content=turn["content"]
        )
    assert parent is not None
    return _answer_queue(parent, model=model, options=options, mode=mode)


def api_conversation_discard(*, message: Message) -> None:
    """Remove a finished API conversation that its key keeps out of the user's history."""
    Conversation.objects.filter(pk=message.conversation_id, in_history=False).exclude(
        messages__state__in=(Message.State.QUEUED, Message.State.RUNNING)
    ).delete()


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
) -> dict[str, Any] | None:
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


def generations_reap(*, connection: redis.Redis) -> list[tuple[str, dict[str, Any]]]:
    """Mend what dead workers and a restarted Redis leave behind; returns the frames to send.

    A running generation whose writer is gone (its worker's process stopped beating, or beats
    without writing it) is marked failed, keeping the text its chunk log holds. A queued one
    whose job is gone from Redis is queued again.
    """
    frames = []
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
            _enqueue(message)
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
        _enqueue(message)


def generations_reap_namesake(
    *, connection: redis.Redis, worker: str, run: str
) -> list[tuple[str, dict[str, Any]]]:
    """Fail at once the answers an earlier process of this worker was writing: called by a
    worker at its start, once it knows no other process of its name is alive."""
    frames = []
    running = Message.objects.filter(state=Message.State.RUNNING, worker=worker)
    for message in running.exclude(worker_run=run):
        frame = _generation_fail_lost(connection, message)
        if frame is not None:
            frames.append((message_group(message.id), frame))
    return frames


def conversation_rename(*, conversation: Conversation, title: str) -> None:
    """The user's own title, which the model's (chat.titles) never replaces."""
    conversation.title = title.strip()[:200]
    conversation.title_by_user = True
    conversation.save(update_fields=["title", "title_by_user"])
    frame = {
        "type": "conversation",
        "conversation": str(conversation.id),
        "title": conversation.title,
    }
    async_to_sync(get_channel_layer().group_send)(
        user_group(conversation.owner_id), {"type": "chat.conversation", "frame": frame}
    )


def conversation_pin(*, conversation: Conversation, pinned: bool) -> None:
    """Pin a conversation to the top of the sidebar, or unpin it. Its updated_at stays: an
    unpinned conversation goes back to its place among the others."""
    conversation.pinned = pinned
    conversation.save(update_fields=["pinned"])


def conversation_delete(*, conversation: Conversation) -> None:
    """Delete a conversation; its answers still waiting or running are stopped first."""
    for message in conversation.messages.filter(
        state__in=(Message.State.QUEUED, Message.State.RUNNING)
    ):
        message_abort(user=conversation.owner, message_id=message.id)
    frame = {"type": "conversation_deleted", "conversation": str(conversation.id)}
    group = user_group(conversation.owner_id)
    conversation.delete()
    # Every page of the user drops it from its sidebar; one showing it leaves its address.
    transaction.on_commit(
        lambda: async_to_sync(get_channel_layer().group_send)(
            group, {"type": "chat.conversation", "frame": frame}
        )
    )


IMPORT_ROLES = {"system", "user", "assistant", "tool"}
MAX_IMPORT_MESSAGES = 5000


def _imported_state(state: Any) -> str:
    # An export taken mid-answer still imports as a finished message.
    return state if state in Message.FINISHED_STATES else Message.State.DONE


def _imported_tool_calls(calls: Any) -> list[dict[str, Any]]:
    """The calls of an exported answer in OpenAI's shape; anything else is left out, since
    the page and the API read `function.name` and `function.arguments` of each."""
    if not isinstance(calls, list):
        return []
    kept = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        name, arguments = function.get("name"), function.get("arguments")
        if isinstance(name, str) and isinstance(arguments, str):
            call_id = call.get("id") if isinstance(call.get("id"), str) else ""
            kept.append(
                {
                    "id": call_id[:100],
                    "type": "function",
                    "function": {"name": name[:200], "arguments": arguments},
                }
            )
    return kept


def _imported_title(*, user: User, title: str) -> str:
    """The export's title, marked "(imported)" (and numbered) when the user already has a
    conversation of that name, so the copy can be told from the original in the sidebar."""
    title = title[:200]
    taken = set(
        Conversation.objects.filter(owner=user, title__startswith=title[:180]).values_list(
            "title", flat=True
        )
    )
    if title not in taken:
        return title
    for number in range(1, 1000):
        suffix = " (imported)" if number == 1 else f" (imported {number})"
        candidate = title[: 200 - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
    return title


def _imported_settings(*, user: User, values: Any) -> dict[str, Any]:
    """The export's settings (system prompt, sampling, JSON mode...), each one checked as
    generation options are; one this server refuses (an option it does not know, a value out
    of its range) is left out rather than refusing the whole conversation."""
    if not isinstance(values, dict):
        return {}
    kept = {}
    for key, value in values.items():
        try:
            options_parse({key: value}, max_priority=max_priority_for(user))
        except InvalidOptions:
            continue
        if value is not None:
            kept[key] = value
    return kept


def _imported_text(value: Any) -> str:
    return value if isinstance(value, str) else ""


@transaction.atomic
def conversation_import(*, user: User, data: dict[str, Any]) -> Conversation:
    """A new conversation from a JSON export (docs/api.md), its branches kept."""
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages or len(messages) > MAX_IMPORT_MESSAGES:
        raise ChatError(
            "invalid_import",
            f"An export has a 'messages' list of 1 to {MAX_IMPORT_MESSAGES} messages.",
        )
    title = data.get("title")
    title = title if isinstance(title, str) else ""
    conversation = Conversation.objects.create(
        owner=user,
        title=_imported_title(user=user, title=title.strip() or "Imported"),
        settings=_imported_settings(user=user, values=data.get("settings")),
    )
    # A file written by hand or by another tool often has no `parent` at all: its messages are
    # one thread in order. (Made roots, each would be a version of the first prompt.)
    linear = not any(isinstance(item, dict) and "parent" in item for item in messages)
    created: dict[str, Message] = {}
    previous: Message | None = None
    for index, item in enumerate(messages, start=1):
        if not isinstance(item, dict) or item.get("role") not in IMPORT_ROLES:
            raise ChatError("invalid_import", f"Message {index} has no valid role.")
        if not isinstance(item.get("content"), str):
            raise ChatError("invalid_import", f"Message {index} has no text content.")
        previous = created[str(item.get("id") or index)] = Message.objects.create(
            conversation=conversation,
            parent=previous if linear else created.get(str(item.get("parent"))),
            role=item["role"],
            content=item["content"],
            reasoning=_imported_text(item.get("reasoning")),
            note=_imported_text(item.get("note"))[:300],
            state=_imported_state(item.get("state")),
            finish_reason=str(item.get("finish_reason") or "")[:20],
            model_name=str(item.get("model") or "")[:200],
            tool_calls=_imported_tool_calls(item.get("tool_calls")),
        )
    return conversation


def conversation_settings_update(*, conversation: Conversation, values: dict[str, Any]) -> None:
    """Save the chat page's settings for a conversation; they are checked as generation options
    (InvalidOptions names a bad key), so what is saved can always be sent."""
    options_parse(values, max_priority=max_priority_for(conversation.owner))
    conversation.settings = {k: v for k, v in values.items() if v is not None}
    conversation.save(update_fields=["settings"])


MAX_PRESETS = 100


def preset_save(*, user: User, name: str, text: str) -> SystemPromptPreset:
    """Create a system-prompt preset, or replace the text of the one with that name."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ChatError("invalid_preset", "A preset needs a name of 1 to 100 characters.")
    if not text.strip() or len(text) > MAX_SYSTEM_PROMPT_CHARS:
        raise ChatError(
            "invalid_preset", f"A preset needs a text of 1 to {MAX_SYSTEM_PROMPT_CHARS} characters."
        )
    existing = SystemPromptPreset.objects.filter(owner=user)
    if existing.count() >= MAX_PRESETS and not existing.filter(name=name).exists():
        raise ChatError("invalid_preset", f"You have {MAX_PRESETS} presets; delete one first.")
    preset, _ = SystemPromptPreset.objects.update_or_create(
        owner=user, name=name, defaults={"text": text}
    )
    return preset


@transaction.atomic
def preset_default_set(*, user: User, preset_id: int, default: bool) -> SystemPromptPreset:
    """Make one of the user's presets the one new chats start with (the others stop being it),
    or stop it being the default."""
    preset = SystemPromptPreset.objects.select_for_update().filter(owner=user, pk=preset_id).first()
    if preset is None:
        raise ChatError("not_found", "That preset does not exist or is not yours.")
    if default:
        SystemPromptPreset.objects.filter(owner=user, is_default=True).exclude(pk=preset.pk).update(
            is_default=False
        )
    preset.is_default = default
    preset.save(update_fields=["is_default"])
    return preset


@transaction.atomic
def conversation_share(
    *, conversation: Conversation, everyone: bool, usernames: list[str]
) -> ConversationShare:
    """Share a conversation read-only, with everyone logged in or with the named users; sharing
    again changes who sees it and keeps the link."""
    users = list(User.objects.filter(username__in=usernames, is_active=True))
    missing = sorted(set(usernames) - {u.username for u in users})
    if missing:
        raise ChatError("invalid_share", f"There is no user named {', '.join(missing)}.")
    if not everyone and not users:
        raise ChatError("invalid_share", "Share with everyone logged in, or name someone.")
    share, _ = ConversationShare.objects.get_or_create(
        conversation=conversation, defaults={"token": secrets.token_urlsafe(32)}
    )
    share.everyone = everyone
    share.save(update_fields=["everyone"])
    share.users.set(users)
    return share


def conversation_unshare(*, conversation: Conversation) -> None:
    """Revoke the conversation's link: whoever has it gets a 404 from now on."""
    ConversationShare.objects.filter(conversation=conversation).delete()
