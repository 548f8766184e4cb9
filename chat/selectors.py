"""Reads of the chat app."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import User
from django.db.models import Q, QuerySet
from django.http import Http404

from chat.models import Conversation, Message

SIDEBAR_PAGE = 50


def conversation_list(*, user: User, search: str = "") -> QuerySet[Conversation]:
    """The user's conversations, pinned ones first, then newest first; `search` matches titles
    and message text."""
    conversations = Conversation.objects.filter(owner=user, in_history=True)
    if search:
        # Only this user's messages are read: on a shared server most text is someone else's.
        matching = Message.objects.filter(
            conversation__owner=user, content__icontains=search
        ).values("conversation_id")
        conversations = conversations.filter(Q(title__icontains=search) | Q(pk__in=matching))
    return conversations.order_by("-pinned", "-updated_at")


def conversation_get(*, user: User, conversation_id: uuid.UUID) -> Conversation:
    """The user's own conversation, or 404 (another user's id looks like a missing one)."""
    conversation = Conversation.objects.filter(
        owner=user, pk=conversation_id, in_history=True
    ).first()
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def conversation_messages(*, conversation: Conversation) -> list[Message]:
    return list(conversation.messages.order_by("created_at"))


def conversation_branch(*, conversation: Conversation) -> list[Message]:
    """The branch that leads to the newest message, from the first message down: what the chat
    page shows after a reload."""
    messages = {m.pk: m for m in conversation.messages.all()}
    if not messages:
        return []
    newest = max(messages.values(), key=lambda m: m.created_at)
    branch = []
    node: Message | None = newest
    while node is not None:
        branch.append(node)
        node = messages.get(node.parent_id) if node.parent_id else None
    return branch[::-1]
