"""Documents and collections attached to a chat turn: the socket's checks before anything is
saved, and how turns and answers show their attachments and citations (with `gone`).
No worker: every refusal here comes before the queue."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from chat.models import Conversation, Message
from documents.models import Document
from documents.services import collection_create, document_delete, document_upload
from tests.chat.socket_client import open_socket
from tests.documents.conftest import clean_documents, index_here, pdf_bytes, upload
from wizweb.apikeys import apikey_create

__all__ = ["clean_documents"]  # a fixture of the documents tests, used here too

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel_layer_closed", "clean_documents"),
]


def _ready(owner: Any, name: str = "notes.txt", text: str = "The kettle is in room 4.") -> Document:
    document = document_upload(user=owner, collection=None, upload=upload(name, text.encode()))
    return index_here(document)


async def _refusal(user: Any, frame: dict[str, Any]) -> dict[str, Any]:
    socket = await open_socket(user)
    await socket.send_json_to({"type": "prompt", "content": "What is in it?", **frame})
    answer = await socket.receive_json_from(timeout=10)
    await socket.disconnect()
    assert answer["type"] == "error", answer
    return answer


async def test_it_refuses_an_outsiders_document_or_collection_as_not_found(
    owner: Any, outsider: Any, default_model: Any
) -> None:
    document = await sync_to_async(_ready)(owner)
    collection = await sync_to_async(collection_create)(user=owner, name="Private")
    for frame in ({"documents": [document.pk]}, {"collections": [collection.pk]}):
        refused = await _refusal(outsider, frame)
        assert refused["code"] == "not_found"
        assert "does not exist, or is not shared with you" in refused["message"]
    # The same sentence as for an id nobody has: nothing tells the outsider it exists.
    missing = await _refusal(outsider, {"documents": [document.pk + 1000]})
    assert missing["message"] == refused["message"].replace(
        f"Collection {collection.pk}", f"Document {document.pk + 1000}"
    )
    assert await Message.objects.acount() == 0
    assert await Conversation.objects.acount() == 0


async def test_it_refuses_a_document_not_ready_naming_it_and_its_progress(
    owner: Any, default_model: Any
) -> None:
    queued = await sync_to_async(document_upload)(
        user=owner, collection=None, upload=upload("manual.pdf", pdf_bytes(["one", "two"]))
    )
    refused = await _refusal(owner, {"documents": [queued.pk]})
    assert refused["code"] == "document_not_ready"
    assert refused["message"] == (
        "manual.pdf is not ready yet (waiting to be read); send the prompt again once it is."
    )
    await Document.objects.filter(pk=queued.pk).aupdate(
        state=Document.State.INDEXING, pages_done=1, pages_total=2
    )
    refused = await _refusal(owner, {"documents": [queued.pk]})
    assert "(1 of 2 pages read)" in refused["message"]
    await Document.objects.filter(pk=queued.pk).aupdate(
        state=Document.State.FAILED, error="This PDF has no text layer (scanned pages?); OCR it."
    )
    refused = await _refusal(owner, {"documents": [queued.pk]})
    assert refused["code"] == "document_failed"
    assert refused["message"].startswith("manual.pdf could not be read: This PDF has no text")
    assert await Message.objects.acount() == 0


@pytest.mark.parametrize(
    "frame",
    [
        {"documents": "3"},
        {"documents": [1.5]},
        {"documents": [True]},
        {"documents": [0]},
        {"documents": list(range(1, 22))},
        {"collections": list(range(1, 12))},
        {"collections": {"id": 1}},
    ],
)
async def test_it_refuses_attachments_of_the_wrong_shape(
    owner: Any, default_model: Any, frame: dict[str, Any]
) -> None:
    refused = await _refusal(owner, frame)
    assert refused["code"] == "invalid_attachments"
    assert "must be a list of at most" in refused["message"]


async def test_an_edit_keeps_the_turns_attachments_unless_it_gives_new_ones(
    owner: Any, outsider: Any, default_model: Any
) -> None:
    document = await sync_to_async(_ready)(owner)
    socket = await open_socket(owner)
    await socket.send_json_to(
        {"type": "prompt", "content": "Where is the kettle?", "documents": [document.pk]}
    )
    accepted = await socket.receive_json_from(timeout=10)
    assert accepted["type"] == "accepted", accepted
    first = await Message.objects.aget(pk=accepted["user_message"])
    assert first.attachments == {"documents": [document.pk], "collections": []}

    await socket.send_json_to({"type": "abort", "message": accepted["message"]})
    await socket.send_json_to({"type": "edit", "message": str(first.id), "content": "Where?"})
    edited = await _next_accepted(socket)
    kept = await Message.objects.aget(pk=edited["user_message"])
    assert kept.attachments == first.attachments
    await socket.send_json_to({"type": "abort", "message": edited["message"]})

    await socket.send_json_to(
        {"type": "edit", "message": str(first.id), "content": "And now?", "documents": []}
    )
    cleared = await _next_accepted(socket)
    assert (await Message.objects.aget(pk=cleared["user_message"])).attachments == {}
    await socket.send_json_to({"type": "abort", "message": cleared["message"]})
    await socket.disconnect()


async def _next_accepted(socket: Any) -> dict[str, Any]:
    while True:
        frame = await socket.receive_json_from(timeout=10)
        assert frame["type"] != "error", frame
        if frame["type"] == "accepted":
            return frame


def test_a_turn_shows_its_attachments_and_an_answer_its_citations_gone_once_deleted(
    owner: Any, outsider: Any
) -> None:
    kept = _ready(owner, "kept.txt", "Kept text.")
    deleted = _ready(owner, "deleted.txt", "The kettle is in room 4.")
    deleted_id = deleted.pk
    collection = collection_create(user=owner, name="Lab")
    conversation = Conversation.objects.create(owner=owner, title="t")
    turn = Message.objects.create(
        conversation=conversation,
        role="user",
        content="Where?",
        attachments={"documents": [kept.pk, deleted_id], "collections": [collection.pk]},
    )
    citation = {
        "n": 1,
        "document": deleted_id,
        "name": "deleted.txt",
        "page": None,
        "passage": None,
        "text": "The kettle is in room 4.",
        "whole": True,
    }
    Message.objects.create(
        conversation=conversation,
        parent=turn,
        role="assistant",
        content="In room 4 [1].",
        citations=[citation],
    )
    document_delete(user=owner, document=deleted)

    client = Client()
    client.force_login(owner)
    body = client.get(f"/api/conversations/{conversation.id}/").json()
    user_frame, answer_frame = body["messages"]
    assert user_frame["attachments"] == [
        {
            "id": kept.pk,
            "name": "kept.txt",
            "size": kept.size_bytes,
            "pages": 0,
            "tokens": kept.tokens,
            "kind": "text",
            "collection": None,
            "gone": False,
        },
        {
            "id": deleted_id,
            "name": None,
            "size": None,
            "pages": None,
            "tokens": None,
            "kind": None,
            "collection": None,
            "gone": True,
        },
        {"collection_id": collection.pk, "collection_name": "Lab", "gone": False},
    ]
    # The snapshot keeps the text; the page says the file is gone.
    assert answer_frame["citations"] == [{**citation, "gone": True}]
    assert "citations" not in user_frame and "attachments" not in answer_frame


def test_the_loose_upload_takes_a_file_for_a_chat_turn_with_the_same_checks(
    owner: Any, outsider: Any
) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    refused = client.post("/api/documents/", {"file": upload("a.txt", b"Some text.")})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf"

    client = Client()
    client.force_login(owner)
    created = client.post("/api/documents/", {"file": upload("a.txt", b"Some text.")})
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["collection"] is None and body["state"] == "queued" and body["name"] == "a.txt"
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    refused = client.post("/api/documents/", {"file": upload("a.pdf", png)})
    assert (
        refused.status_code == 400
        and "Portable Network Graphics" in refused.json()["error"]["message"]
    )
    assert client.post("/api/documents/", {}).json()["error"]["code"] == "no_file"
    listed = client.get("/api/documents/").json()["results"]
    assert [d["id"] for d in listed] == [body["id"]]
    # With an API key, as the rest of /api/ (no CSRF: no session).
    secret = apikey_create(user=owner, name="t").secret
    by_key = Client(enforce_csrf_checks=True).post(
        "/api/documents/",
        {"file": upload("b.md", b"# Title\n\nText.")},
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert by_key.status_code == 201, by_key.content
    assert by_key.json()["kind"] == "markdown" and by_key.json()["collection"] is None
    assert Client().post("/api/documents/", {"file": upload("c.txt", b"x")}).status_code == 401

    outsiders = Client()
    outsiders.force_login(outsider)
    assert outsiders.get("/api/documents/").json()["results"] == []
    assert outsiders.get(f"/api/documents/{body['id']}/").status_code == 404
