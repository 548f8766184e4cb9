"""The `/ws/models/` consumer (staff only): download and worker events for the model-admin
page (docs/protocol.md).

The page gets an event every second from each worker, so a user who stops being staff, logs
out or changes their password is checked for at the next frame or event, and then closed.
"""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from inference.presence import MODELS_GROUP, worker_states
from models_admin.download_events import (
    cancelled_frame,
    download_state_frames,
    models_group_message,
)
from models_admin.downloads import DownloadRefused, download_cancel
from models_admin.models import Download
from wizweb.redis_server import redis_connection
from wizweb.socket_session import SocketSessionEnded, socket_user_reload
from wizweb.untrusted_json import UntrustedJSONError, untrusted_json_parse


def _cancel(download_id: Any) -> Download:
    """The `cancel` frame's service call, refused with a sentence for a bad or finished id."""
    if isinstance(download_id, bool) or not isinstance(download_id, int):
        raise DownloadRefused("cancel needs `download`, the id of a download.")
    download = Download.objects.filter(pk=download_id).first()
    if download is None:
        raise DownloadRefused(f"There is no download {download_id}.")
    download_cancel(download=download)
    return download


class ModelsConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_staff:
            await self.close(code=4403)
            return
        self.user_id = user.pk
        self.ended = False
        await self.channel_layer.group_add(MODELS_GROUP, self.channel_name)
        await self.accept()
        for state in await database_sync_to_async(worker_states)(redis_connection()):
            await self.send_frame(state.as_frame())
        for frame in await database_sync_to_async(download_state_frames)():
            await self.send_frame(frame)

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(MODELS_GROUP, self.channel_name)

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame))

    async def still_staff(self) -> bool:
        """Whether this socket may still be served; if not, it says why and closes."""
        if self.ended:
            return False
        try:
            user = await socket_user_reload(self.scope, self.user_id)
        except SocketSessionEnded as exc:
            await self.end(exc.code, str(exc), close_code=4401)
            return False
        if not user.is_staff:
            await self.end(
                "not_staff",
                "Your account is no longer staff, and this page is for staff; ask an admin.",
                close_code=4403,
            )
            return False
        return True

    async def end(self, code: str, message: str, *, close_code: int) -> None:
        # Events already queued for this channel may still arrive before the close completes.
        self.ended = True
        await self.send_frame({"type": "error", "code": code, "message": message})
        await self.close(code=close_code)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.ended:
            return
        try:
            frame = untrusted_json_parse(text_data or "")
        except UntrustedJSONError as exc:
            await self.send_frame({"type": "error", "code": "invalid_json", "message": str(exc)})
            return
        if not isinstance(frame, dict):
            await self.send_frame(
                {"type": "error", "code": "invalid_frame", "message": "Send JSON objects."}
            )
            return
        if frame.get("type") == "ping":
            await self.send_frame({"type": "pong"})
            return
        if not await self.still_staff():
            return
        if frame.get("type") == "cancel":
            await self.cancel(frame.get("download"))
            return
        await self.send_frame(
            {
                "type": "error",
                "code": "unknown_type",
                "message": f"Unknown frame type {frame.get('type')!r}.",
            }
        )

    async def cancel(self, download_id: Any) -> None:
        try:
            download = await database_sync_to_async(_cancel)(download_id)
        except DownloadRefused as exc:
            await self.send_frame({"type": "error", "code": "cancel_refused", "message": str(exc)})
            return
        if download.state == Download.State.CANCELLED:
            # Nobody was fetching it (queued, or its worker gone): nobody else will say so.
            await self.channel_layer.group_send(
                MODELS_GROUP, models_group_message(cancelled_frame(download))
            )

    async def models_event(self, event: dict[str, Any]) -> None:
        if await self.still_staff():
            await self.send_frame(event["event"])
