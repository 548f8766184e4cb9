"""/ws/models/: staff only; worker.status events as workers beat; download events from the
download worker; the cancel frame."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from inference.presence import MODELS_GROUP
from models_admin.download_events import models_group_message
from models_admin.downloads import download_start
from models_admin.models import Download, LocalModel
from tests.conftest import session_cookie
from tests.models_admin.conftest import TINY_FILE, TINY_REPO
from wizweb.asgi import application

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel_layer_closed"),
]


async def models_socket(user: Any, cookie: str | None = None) -> WebsocketCommunicator:
    """A socket of `user` in a new session of theirs, or in the session `cookie` names."""
    if cookie is None:
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
    connected, code = await socket.connect()
    if connected:
        closed = await socket.receive_output(timeout=5)
        assert closed["type"] == "websocket.close"
        code = closed["code"]
    assert code == 4403
    await socket.disconnect()


async def test_a_cancel_frame_cancels_a_queued_download_and_tells_every_page(
    staff: Any, hub: Any, clean_downloads: None
) -> None:
    download, _ = await database_sync_to_async(download_start)(
        repo_id=TINY_REPO, filename=TINY_FILE, user=staff
    )
    canceller, watcher = await models_socket(staff), await models_socket(staff)
    assert (await canceller.connect())[0] and (await watcher.connect())[0]
    for socket in (canceller, watcher):  # on connect: the state of recent downloads
        snapshot = await next_download_frame(socket)
        assert snapshot["type"] == "download.progress" and snapshot["download"] == download.pk
        assert (snapshot["bytes"], snapshot["bytes_per_s"], snapshot["eta_s"]) == (0, 0.0, None)
    await canceller.send_json_to({"type": "cancel", "download": download.pk})
    for socket in (canceller, watcher):
        frame = await next_download_frame(socket)
        assert frame == {"type": "download.cancelled", "download": download.pk, "bytes": 0}
    assert (await Download.objects.aget(pk=download.pk)).state == "cancelled"

    await canceller.send_json_to({"type": "cancel", "download": download.pk})
    refused = await next_download_frame(canceller)
    assert refused["type"] == "error" and refused["code"] == "cancel_refused"
    assert "is not running (cancelled)" in refused["message"]
    await canceller.send_json_to({"type": "cancel", "download": "x"})
    assert "the id of a download" in (await next_download_frame(canceller))["message"]
    await canceller.disconnect()
    await watcher.disconnect()


async def next_download_frame(socket: WebsocketCommunicator) -> dict[str, Any]:
    """The next frame that is not a worker's status."""
    while True:
        frame: dict[str, Any] = await socket.receive_json_from(timeout=5)
        if frame["type"] != "worker.status":
            return frame


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


async def test_a_download_on_the_worker_streams_progress_then_done(
    staff: Any, hub: Any, download_worker: Any
) -> None:
    hub.throttle_bytes_per_s = 2 << 20  # four megabytes in about two seconds
    socket = await models_socket(staff)
    assert (await socket.connect())[0]
    download, _ = await database_sync_to_async(download_start)(
        repo_id=TINY_REPO, filename=TINY_FILE, user=staff
    )
    frames = []
    while not frames or frames[-1]["type"] == "download.progress":
        frame = await next_download_frame(socket)
        if frame.get("download") == download.pk:
            frames.append(frame)
    await socket.disconnect()

    progress, end = frames[:-1], frames[-1]
    live = [f for f in progress if f["bytes_per_s"] > 0]
    assert len(live) >= 2  # several reports while the bytes came in
    total = download.total_bytes
    for frame in progress:
        assert set(frame) == {
            "type",
            "download",
            "bytes",
            "total",
            "bytes_per_s",
            "percent",
            "eta_s",
        }
        assert frame["total"] == total
        assert frame["percent"] == round(100 * frame["bytes"] / total, 1)
    assert [f["bytes"] for f in progress] == sorted(f["bytes"] for f in progress)
    assert all(f["eta_s"] is not None and f["eta_s"] >= 0 for f in live[:-1])
    assert progress[-1]["bytes"] == total and progress[-1]["percent"] == 100.0
    model = await LocalModel.objects.aget(file=f"{TINY_REPO}/{TINY_FILE}")
    assert end == {
        "type": "download.done",
        "download": download.pk,
        "model": model.pk,
        "name": "tiny-F32",
    }


async def next_frame_or_close(socket: WebsocketCommunicator) -> dict[str, Any]:
    """The next frame that is not a worker's status (workers beat every second), or the close."""
    while True:
        output = await socket.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            return output
        frame: dict[str, Any] = json.loads(output["text"])
        if frame["type"] != "worker.status":
            return frame


async def assert_ended(socket: WebsocketCommunicator, code: str, close_code: int) -> None:
    error = await next_frame_or_close(socket)
    assert (error["type"], error["code"]) == ("error", code)
    assert error["message"].endswith(".")
    closed = await next_frame_or_close(socket)
    assert (closed["type"], closed["code"]) == ("websocket.close", close_code)


CANCELLED = {"type": "download.cancelled", "download": 1, "bytes": 0}


async def test_it_stops_serving_a_socket_whose_user_is_no_longer_staff(
    staff: Any, owner: Any
) -> None:
    other_admin = await get_user_model().objects.acreate_user("root", is_staff=True)
    demoted, admin = await models_socket(staff), await models_socket(other_admin)
    assert (await demoted.connect())[0] and (await admin.connect())[0]
    staff.is_staff = False
    await staff.asave(update_fields=["is_staff"])
    await demoted.send_json_to({"type": "cancel", "download": 1})
    await assert_ended(demoted, "not_staff", 4403)
    # The next event (a second socket, demoted between two events) is not sent either.
    again = await models_socket(other_admin)
    assert (await again.connect())[0]
    other_admin.is_staff = False
    await other_admin.asave(update_fields=["is_staff"])
    await get_channel_layer().group_send(MODELS_GROUP, models_group_message(CANCELLED))
    await assert_ended(again, "not_staff", 4403)
    await assert_ended(admin, "not_staff", 4403)


async def test_it_stops_serving_a_socket_whose_session_logged_out(staff: Any) -> None:
    cookie = await sync_to_async(session_cookie)(staff)
    logged_out, other_session = await models_socket(staff, cookie), await models_socket(staff)
    assert (await logged_out.connect())[0] and (await other_session.connect())[0]
    browser = Client()
    browser.cookies[settings.SESSION_COOKIE_NAME] = cookie
    await sync_to_async(browser.post)("/accounts/logout/")
    await get_channel_layer().group_send(MODELS_GROUP, models_group_message(CANCELLED))
    await assert_ended(logged_out, "session_ended", 4401)
    assert await next_frame_or_close(other_session) == CANCELLED
    await other_session.send_json_to({"type": "ping"})
    assert await next_frame_or_close(other_session) == {"type": "pong"}
    await other_session.disconnect()


async def test_it_answers_a_frame_too_deep_to_parse_and_stays_open(staff: Any) -> None:
    socket = await models_socket(staff)
    assert (await socket.connect())[0]
    await socket.send_to(text_data='{"type": "cancel", "download": ' + "[" * 100_000 + "}")
    error = await next_frame_or_close(socket)
    assert (error["type"], error["code"]) == ("error", "invalid_json")
    await socket.send_json_to({"type": "ping"})
    assert await next_frame_or_close(socket) == {"type": "pong"}
    await socket.disconnect()
