"""Conversations as their owner edits them: rename, pin, delete, settings, import; system
prompt presets; share links."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from chat.errors import ChatError
from chat.frames import Broadcast, ConversationDeletedFrame, conversation_frame, user_group
from chat.models import Conversation, ConversationShare, Message, SystemPromptPreset
from chat.options import (
    MAX_SYSTEM_PROMPT_CHARS,
    InvalidOptions,
    max_priority_for,
    options_parse,
)
from chat.queue import message_abort


def conversation_rename(*, conversation: Conversation, title: str) -> list[Broadcast]:
    """The user's own title, which the model's (chat.titles) never replaces; returns the
    frame that tells the user's pages."""
    conversation.title = title.strip()[:200]
    conversation.title_by_user = True
    conversation.save(update_fields=["title", "title_by_user"])
    renamed = conversation_frame(conversation.id, conversation.title)
    return [(user_group(conversation.owner_id), renamed)]


def conversation_pin(*, conversation: Conversation, pinned: bool) -> None:
    """Pin a conversation to the top of the sidebar, or unpin it. Its updated_at stays: an
    unpinned conversation goes back to its place among the others."""
    conversation.pinned = pinned
    conversation.save(update_fields=["pinned"])


def conversation_delete(*, conversation: Conversation) -> list[Broadcast]:
    """Delete a conversation; its answers still waiting or running are stopped first. Returns
    the frame that makes every page of the user drop it from its sidebar (and one showing it
    leave its address), to send once the deletion is committed."""
    for message in conversation.messages.filter(
        state__in=(Message.State.QUEUED, Message.State.RUNNING)
    ):
        message_abort(user=conversation.owner, message_id=message.id)
    deleted: ConversationDeletedFrame = {
        "type": "conversation_deleted",
        "conversation": str(conversation.id),
    }
    group = user_group(conversation.owner_id)
    conversation.delete()
    return [(group, deleted)]


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
