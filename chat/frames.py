"""The frames of the chat socket (docs/protocol.md), a TypedDict each, and the one way a frame
reaches the pages that follow it.

A frame goes to a Channels group: a generation's frames (`queued`, `started`, `progress`,
`chunk`, `done`) to its message's group, which the sockets following that answer joined; a
user's own frames (`conversation`, `conversation_deleted`) to the user's group, which every
page of theirs joined. Code that changes something returns the `Broadcast`s it owes, and its
caller sends them: synchronous code (jobs, workers, views) with `broadcast`, through the
process's `ChannelSender`; asynchronous code (consumers, async views) with `broadcast_async`,
on its own event loop's layer. The envelope (`frame_event`) tells the consumer which handler
takes the frame: `chat_frame` sends a generation's frames once each, in seq order
(`FrameFollower`); `chat_conversation` passes a user's frames straight through.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, Literal, NotRequired, TypedDict

from channels.layers import BaseChannelLayer

from wizweb.channels_sender import ChannelSender, channel_sender

# Client → server frames are read by chat.consumers; these are the server's.


class AcceptedFrame(TypedDict):
    type: Literal["accepted"]
    client_id: Any  # whatever the client sent, echoed
    conversation: str
    user_message: str
    message: str
    queue_position: int


class ConversationFrame(TypedDict):
    type: Literal["conversation"]
    conversation: str
    title: str


class ConversationDeletedFrame(TypedDict):
    type: Literal["conversation_deleted"]
    conversation: str


class QueuedFrame(TypedDict):
    type: Literal["queued"]
    message: str
    position: int  # 1 = next to start
    eta_s: int | None  # an estimate of the wait; None while no worker is writing


class StartedFrame(TypedDict):
    type: Literal["started"]
    message: str
    model: str
    worker: str


class ProgressFrame(TypedDict):
    type: Literal["progress"]
    message: str
    done: int  # prompt tokens read so far (a cached start counts as read)
    total: int  # the prompt's tokens


class ChunkFrame(TypedDict):
    type: Literal["chunk"]
    message: str
    seq: int
    text: str
    channel: str  # "content", or "reasoning": a thinking model's thoughts


class DoneFrame(TypedDict):
    type: Literal["done"]
    message: str
    finish_reason: str
    content: str
    reasoning: str
    usage: dict[str, Any] | None
    timings: dict[str, Any]
    note: NotRequired[str]
    trimmed: NotRequired[dict[str, int]]
    tool_calls: NotRequired[list[dict[str, Any]]]
    error: NotRequired[str]
    citations: NotRequired[list[dict[str, Any]]]  # a chat answer's sources (documents.md)


class ErrorFrame(TypedDict):
    type: Literal["error"]
    code: str
    message: str
    client_id: NotRequired[Any]
    key: NotRequired[str]


class PongFrame(TypedDict):
    type: Literal["pong"]


GenerationFrame = QueuedFrame | StartedFrame | ProgressFrame | ChunkFrame | DoneFrame
UserFrame = ConversationFrame | ConversationDeletedFrame
Frame = AcceptedFrame | GenerationFrame | UserFrame | ErrorFrame | PongFrame

# (group, frame): a frame owed to the sockets in a group.
Broadcast = tuple[str, GenerationFrame | UserFrame]

USER_FRAME_TYPES = frozenset({"conversation", "conversation_deleted"})


def message_group(message_id: uuid.UUID | str) -> str:
    """The group of the sockets following one answer."""
    return f"message.{uuid.UUID(str(message_id)).hex}"


def user_group(user_id: int) -> str:
    """The group of every page one user has open."""
    return f"user.{user_id}"


def conversation_frame(conversation_id: uuid.UUID | str, title: str) -> ConversationFrame:
    return {"type": "conversation", "conversation": str(conversation_id), "title": title}


def frame_event(frame: GenerationFrame | UserFrame) -> dict[str, Any]:
    """The channel-layer message carrying a frame to a consumer: its handler by the frame."""
    handler = "chat.conversation" if frame["type"] in USER_FRAME_TYPES else "chat.frame"
    return {"type": handler, "frame": frame}


def broadcast(broadcasts: Iterable[Broadcast], *, sender: ChannelSender = channel_sender) -> None:
    """Send frames from synchronous code; returns at once (the sender keeps their order)."""
    for group, frame in broadcasts:
        sender.send(group, frame_event(frame))


async def broadcast_async(layer: BaseChannelLayer, broadcasts: Iterable[Broadcast]) -> None:
    """Send frames from asynchronous code, on the caller's own channel layer."""
    for group, frame in broadcasts:
        await layer.group_send(group, frame_event(frame))
