"""Documents and collections attached to a chat turn: the shape a client sends (`documents`,
`collections`), the checks made before anything is saved (each readable by the user, each
document ready), and how a saved turn's attachments and an answer's citations are shown, with
`gone` for what the conversation's owner can no longer read (deleted, or no longer shared).

A turn stores only ids (`Message.attachments`); an answer stores its sources as a snapshot
(`Message.citations`, written by chat.grounding on the worker)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chat.errors import ChatError
from documents.models import Collection, Document
from documents.selectors import Reader, collections_readable_by, documents_readable_by

if TYPE_CHECKING:
    from chat.models import Message

MAX_DOCUMENTS = 20
MAX_COLLECTIONS = 10


@dataclass(frozen=True)
class Attachments:
    documents: tuple[int, ...] = ()
    collections: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.documents or self.collections)

    def stored(self) -> dict[str, list[int]]:
        """What `Message.attachments` keeps: {} for a turn without any."""
        if not self:
            return {}
        return {"documents": list(self.documents), "collections": list(self.collections)}

    @classmethod
    def of(cls, message: Message) -> Attachments:
        stored = message.attachments or {}
        return cls(tuple(stored.get("documents", ())), tuple(stored.get("collections", ())))


def _ids(key: str, value: Any, limit: int) -> tuple[int, ...]:
    if value is None:
        return ()
    what = "document" if key == "documents" else "collection"
    if (
        not isinstance(value, list)
        or len(value) > limit
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ChatError(
            "invalid_attachments",
            f"'{key}' must be a list of at most {limit} {what} ids (whole numbers).",
        )
    return tuple(dict.fromkeys(value))  # once each, in the order given


def attachments_parse(documents: Any, collections: Any) -> Attachments:
    """The ids a client sent (null or absent: none), in shape only; `attachments_check` then
    says whether the user may attach them."""
    return Attachments(
        _ids("documents", documents, MAX_DOCUMENTS),
        _ids("collections", collections, MAX_COLLECTIONS),
    )


def attachments_check(*, user: Reader, attachments: Attachments) -> None:
    """Refuse, with a sentence, attachments the user may not read or a document not ready to
    be read from. Something the user may not read is refused as one that does not exist."""
    if attachments.documents:
        found = documents_readable_by(user).in_bulk(list(attachments.documents))
        for document_id in attachments.documents:
            document = found.get(document_id)
            if document is None:
                raise ChatError(
                    "not_found",
                    f"Document {document_id} does not exist, or is not shared with you.",
                )
            _ready_check(document)
    if attachments.collections:
        readable = set(
            collections_readable_by(user)
            .filter(pk__in=attachments.collections)
            .values_list("pk", flat=True)
        )
        for collection_id in attachments.collections:
            if collection_id not in readable:
                raise ChatError(
                    "not_found",
                    f"Collection {collection_id} does not exist, or is not shared with you.",
                )


def _ready_check(document: Document) -> None:
    if document.state == Document.State.READY:
        return
    if document.state == Document.State.FAILED:
        raise ChatError(
            "document_failed",
            f"{document.name} could not be read: {document.error} "
            "Remove it from the prompt, or upload a readable copy.",
        )
    if document.pages_total:
        progress = f"{document.pages_done} of {document.pages_total} pages read"
    elif document.state == Document.State.QUEUED:
        progress = "waiting to be read"
    else:
        progress = "being read"
    raise ChatError(
        "document_not_ready",
        f"{document.name} is not ready yet ({progress}); send the prompt again once it is.",
    )


@dataclass
class SourcesLookup:
    """What the conversation's owner may still read among the documents and collections some
    messages name: one query each, for a whole conversation's frames."""

    documents: dict[int, Document] = field(default_factory=dict)
    collections: dict[int, Collection] = field(default_factory=dict)

    @classmethod
    def for_messages(cls, messages: Iterable[Message], *, owner: Reader) -> SourcesLookup:
        document_ids: set[int] = set()
        collection_ids: set[int] = set()
        for message in messages:
            attached = Attachments.of(message)
            document_ids.update(attached.documents)
            collection_ids.update(attached.collections)
            document_ids.update(c["document"] for c in message.citations or [])
        lookup = cls()
        if document_ids:
            lookup.documents = documents_readable_by(owner).in_bulk(list(document_ids))
        if collection_ids:
            lookup.collections = collections_readable_by(owner).in_bulk(list(collection_ids))
        return lookup

    def attachment_frames(self, message: Message) -> list[dict[str, Any]]:
        attached = Attachments.of(message)
        frames: list[dict[str, Any]] = []
        for document_id in attached.documents:
            document = self.documents.get(document_id)
            if document is None:
                frames.append({"id": document_id, **dict.fromkeys(DOCUMENT_KEYS), "gone": True})
                continue
            frames.append(
                {
                    "id": document_id,
                    "name": document.name,
                    "size": document.size_bytes,
                    "pages": document.pages,
                    "tokens": document.tokens,
                    "kind": document.kind,
                    "collection": document.collection_id,
                    "gone": False,
                }
            )
        for collection_id in attached.collections:
            collection = self.collections.get(collection_id)
            frames.append(
                {
                    "collection_id": collection_id,
                    "collection_name": collection.name if collection else None,
                    "gone": collection is None,
                }
            )
        return frames

    def citation_frames(self, message: Message) -> list[dict[str, Any]]:
        return [
            {**citation, "gone": citation["document"] not in self.documents}
            for citation in message.citations or []
        ]


DOCUMENT_KEYS = ("name", "size", "pages", "tokens", "kind", "collection")


def message_frames(messages: list[Message], *, owner: Reader) -> list[dict[str, Any]]:
    """The frames of a conversation's messages (`Message.as_frame`), with one lookup of their
    documents for all of them."""
    lookup = SourcesLookup.for_messages(messages, owner=owner)
    return [m.as_frame(sources=lookup) for m in messages]
