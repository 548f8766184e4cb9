"""/ws/documents/: logged-in users only; on connect, the state of their own documents."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from documents.models import Document
from documents.services import collection_create, document_upload
from tests.conftest import session_cookie
from tests.documents.conftest import index_here, pdf_bytes, upload
from wizweb.asgi import application

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel_layer_closed", "clean_documents"),
]


def socket_of(cookie: str | None) -> WebsocketCommunicator:
    headers = [(b"host", b"testserver"), (b"origin", b"http://testserver")]
    if cookie is not None:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return WebsocketCommunicator(application, "/ws/documents/", headers=headers)


async def test_it_refuses_a_socket_without_a_session() -> None:
    socket = socket_of(None)
    connected, code = await socket.connect()
    if connected:
        closed = await socket.receive_output(timeout=5)
        assert closed["type"] == "websocket.close"
        code = closed["code"]
    assert code == 4401
    await socket.disconnect()


async def test_on_connect_a_page_hears_of_its_own_documents_only(owner: Any, outsider: Any) -> None:
    def add() -> tuple[Document, Document]:
        collection = collection_create(user=owner, name="c")
        ready = index_here(
            document_upload(user=owner, collection=collection, upload=upload("a.txt", b"words"))
        )
        failed = index_here(
            document_upload(
                user=owner, collection=collection, upload=upload("b.pdf", pdf_bytes([""]))
            )
        )
        return ready, failed

    ready, failed = await sync_to_async(add)()
    mine = socket_of(await sync_to_async(session_cookie)(owner))
    assert (await mine.connect())[0]
    frames = [await mine.receive_json_from(timeout=5) for _ in range(2)]
    assert {f["document"]: f["type"] for f in frames} == {
        ready.pk: "document.ready",
        failed.pk: "document.failed",
    }
    assert "no text layer" in next(f for f in frames if f["type"] == "document.failed")["error"]
    await mine.send_json_to({"type": "ping"})
    assert await mine.receive_json_from(timeout=5) == {"type": "pong"}
    await mine.send_to(text_data="[")
    assert (await mine.receive_json_from(timeout=5))["code"] == "invalid_json"
    await mine.disconnect()

    theirs = socket_of(await sync_to_async(session_cookie)(outsider))
    assert (await theirs.connect())[0]
    assert await theirs.receive_nothing(timeout=0.5)
    await theirs.disconnect()
