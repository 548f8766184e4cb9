"""Following one generation from async code that is not a consumer (the HTTP APIs): its frames,
from the backlog and then live from its group, each once and in order, until `done`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from chat.streams import message_backlog, message_group
from wizweb.redis_server import redis_connection


async def message_follow(message_id: uuid.UUID | str) -> AsyncIterator[dict[str, Any]]:
    layer = get_channel_layer()
    group = message_group(message_id)
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    last_seq = 0
    try:
        backlog = await database_sync_to_async(message_backlog)(redis_connection(), message_id, 0)
        for frame in backlog:
            if frame["type"] == "chunk":
                last_seq = frame["seq"]
            yield frame
            if frame["type"] == "done":
                return
        while True:
            event = await layer.receive(channel)
            frame = event.get("frame") or {}
            if frame.get("type") == "chunk":
                if frame["seq"] <= last_seq:
                    continue
                last_seq = frame["seq"]
            yield frame
            if frame.get("type") == "done":
                return
    finally:
        await layer.group_discard(group, channel)
