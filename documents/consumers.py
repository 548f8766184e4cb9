"""The `/ws/documents/` consumer: a logged-in user's pages hear how their documents' indexing
goes (docs/protocol.md, "Documents"). It only listens; uploads go through the HTTP API."""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from documents.events import document_state_frames, documents_group
from wizweb.socket_session import SocketSessionEnded, socket_user_reload
from wizweb.untrusted_json import UntrustedJSONError, untrusted_json_parse


class DocumentsConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.user_id = user.pk
        self.ended = False
        await self.channel_layer.group_add(documents_group(self.user_id), self.channel_name)
        await self.accept()
        for frame in await database_sync_to_async(document_state_frames)(user_id=self.user_id):
            await self.send_frame(frame)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "user_id", None) is not None:
            await self.channel_layer.group_discard(documents_group(self.user_id), self.channel_name)

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            frame = untrusted_json_parse(text_data or "")
        except UntrustedJSONError as exc:
            await self.send_frame({"type": "error", "code": "invalid_json", "message": str(exc)})
            return
        if isinstance(frame, dict) and frame.get("type") == "ping":
            await self.send_frame({"type": "pong"})
            return
        await self.send_frame(
            {
                "type": "error",
                "code": "unknown_type",
                "message": 'This socket only listens; send {"type": "ping"} or nothing.',
            }
        )

    async def documents_event(self, event: dict[str, Any]) -> None:
        # The socket outlives its handshake: a logout or a disabled account ends it here.
        if self.ended:
            return
        try:
            await socket_user_reload(self.scope, self.user_id)
        except SocketSessionEnded as exc:
            self.ended = True
            await self.send_frame({"type": "error", "code": exc.code, "message": str(exc)})
            await self.close(code=4401)
            return
        await self.send_frame(event["event"])
