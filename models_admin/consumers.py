"""The `/ws/models/` consumer (staff only): download and worker events for the model-admin
page (docs/protocol.md)."""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from models_admin.workers import MODELS_GROUP, worker_states
from wizweb.redis_server import redis_connection


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
        await self.send_frame(
            {
                "type": "error",
                "code": "unknown_type",
                "message": f"Unknown frame type {frame.get('type')!r}.",
            }
        )

    async def models_event(self, event: dict[str, Any]) -> None:
        await self.send_frame(event["event"])
