"""The `/ws/models/` consumer (staff only): download and worker events for the model-admin
page (docs/protocol.md)."""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from models_admin.download_events import (
    cancelled_frame,
    download_state_frames,
    models_group_message,
)
from models_admin.models import Download
from models_admin.services import DownloadRefused, download_cancel
from models_admin.workers import MODELS_GROUP, worker_states
from wizweb.redis_server import redis_connection


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

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            frame = json.loads(text_data or "")
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            await self.send_frame(
                {"type": "error", "code": "invalid_frame", "message": "Send JSON objects."}
            )
            return
        if frame.get("type") == "ping":
            await self.send_frame({"type": "pong"})
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
        await self.send_frame(event["event"])
