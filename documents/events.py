"""The documents events of `/ws/documents/` (docs/protocol.md): their shapes, and the one helper
that sends them from the indexing job to the owner's pages (group `documents.<user id>`)."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from documents.models import Document
from wizweb.channels_sender import ChannelSender


def documents_group(user_id: int) -> str:
    return f"documents.{user_id}"


class ProgressFrame(TypedDict):
    type: Literal["document.progress"]
    document: int
    state: str
    pages_done: int
    pages_total: int


class ReadyFrame(TypedDict):
    type: Literal["document.ready"]
    document: int
    pages: int
    tokens: int
    passages: int


class FailedFrame(TypedDict):
    type: Literal["document.failed"]
    document: int
    error: str


def progress_frame(document: Document) -> ProgressFrame:
    return {
        "type": "document.progress",
        "document": document.pk,
        "state": document.state,
        "pages_done": document.pages_done,
        "pages_total": document.pages_total,
    }


def ready_frame(document: Document, *, passages: int) -> ReadyFrame:
    return {
        "type": "document.ready",
        "document": document.pk,
        "pages": document.pages,
        "tokens": document.tokens,
        "passages": passages,
    }


def failed_frame(document: Document) -> FailedFrame:
    return {"type": "document.failed", "document": document.pk, "error": document.error}


def document_state_frames(*, user_id: int, limit: int = 50) -> list[Any]:
    """The state of the user's most recent documents as frames, for a page that has just
    connected: whatever happened between its render and its socket is told again."""
    frames: list[Any] = []
    for document in Document.objects.filter(owner_id=user_id)[:limit]:
        if document.is_active:
            frames.append(progress_frame(document))
        elif document.state == Document.State.READY:
            frames.append(ready_frame(document, passages=document.passages.count()))
        else:
            frames.append(failed_frame(document))
    return frames


def documents_group_message(frame: Any) -> dict[str, Any]:
    """The channel-layer message that DocumentsConsumer.documents_event turns into the frame."""
    return {"type": "documents.event", "event": dict(frame)}


class DocumentEvents:
    """Sends one document's events to its owner's pages through a ChannelSender (the worker's
    horse, or a test running the job in its own process)."""

    def __init__(self, sender: ChannelSender, *, user_id: int) -> None:
        self.sender = sender
        self.group = documents_group(user_id)

    def send(self, frame: Any) -> None:
        self.sender.send(self.group, documents_group_message(frame))

    def flush(self) -> None:
        self.sender.flush()
