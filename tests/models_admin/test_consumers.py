"""/ws/models/: staff only; worker.status events as workers beat."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from tests.conftest import session_cookie
from wizweb.asgi import application

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel_layer_closed"),
]


async def models_socket(user: Any) -> WebsocketCommunicator:
    cookie = await sync_to_async(session_cookie)(user)
    return WebsocketCommunicator(
        application,
        "/ws/models/",
        headers=[
            (b"host", b"testserver"),
            (b"origin", b"http://testserver"),
            (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()),
        ],
    )


async def test_it_refuses_a_user_who_is_not_staff(owner: Any) -> None:
    socket = await models_socket(owner)
    connected, _ = await socket.connect()
    if connected:
        assert (await socket.receive_output(timeout=5))["type"] == "websocket.close"
    await socket.disconnect()


async def test_it_streams_worker_status_to_staff(staff: Any, inference_worker: Any) -> None:
    socket = await models_socket(staff)
    connected, _ = await socket.connect()
    assert connected
    seen = []
    for _ in range(10):
        frame = await socket.receive_json_from(timeout=5)
        seen.append(frame)
        if frame["type"] == "worker.status" and frame["worker"] == "test-inference":
            break
    await socket.disconnect()
    status = seen[-1]
    assert status["worker"] == "test-inference"
    assert set(status) >= {"models", "busy", "rss_bytes", "queue_depths", "heartbeat"}
    assert status["rss_bytes"] > 0
