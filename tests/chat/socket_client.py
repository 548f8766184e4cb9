"""A test client of /ws/chat/ on the real ASGI application (channels' WebsocketCommunicator)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from tests.conftest import session_cookie
from wizweb.asgi import application


async def connect(
    user: Any = None, origin: str = "http://testserver", *, cookie: str | None = None
) -> WebsocketCommunicator:
    """A socket of `user` in a new session of theirs, or in the session `cookie` names."""
    headers = [(b"host", b"testserver"), (b"origin", origin.encode())]
    if cookie is None and user is not None:
        cookie = await sync_to_async(session_cookie)(user)
    if cookie is not None:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return WebsocketCommunicator(application, "/ws/chat/", headers=headers)


async def open_socket(user: Any = None, *, cookie: str | None = None) -> WebsocketCommunicator:
    socket = await connect(user, cookie=cookie)
    connected, _ = await socket.connect()
    assert connected
    return socket


async def send_prompt(socket: WebsocketCommunicator, content: str, **options: Any) -> dict:
    """Send a prompt and return its `accepted` (frames of other messages before it are skipped)."""
    await socket.send_json_to({"type": "prompt", "content": content, "options": options})
    while True:
        frame = await socket.receive_json_from(timeout=10)
        assert frame["type"] != "error", frame
        if frame["type"] == "accepted":
            return frame


async def collect(
    socket: WebsocketCommunicator, until: Callable[[list[dict]], Any], timeout: float = 60
) -> list[dict]:
    frames: list[dict] = []
    while not until(frames):
        try:
            frames.append(await socket.receive_json_from(timeout=timeout))
        except Exception as exc:  # a timeout, or what cancelling the consumer raised
            # Say what did come: an error frame in there is usually the whole story.
            raise AssertionError(
                f"No frame within {timeout} s ({exc!r}); received before: {frames}"
            ) from exc
    return frames


def done_for(frames: list[dict], message: str) -> dict | None:
    return next((f for f in frames if f["type"] == "done" and f["message"] == message), None)


async def frames_until_done(socket: WebsocketCommunicator, timeout: float = 60) -> list[dict]:
    """Frames up to the first `done` or `error`."""
    return await collect(
        socket, lambda fs: fs and fs[-1]["type"] in ("done", "error"), timeout=timeout
    )


async def next_of_type(socket: WebsocketCommunicator, kind: str, message: str) -> dict:
    frames = await collect(
        socket, lambda fs: fs and fs[-1]["type"] == kind and fs[-1].get("message") == message
    )
    return frames[-1]
