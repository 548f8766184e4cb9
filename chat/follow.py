"""Following one generation from async code that is not a consumer (the HTTP APIs): its frames,
from the backlog and then live from its group, each once and in order, until `done`.

Live frames can be missed: the private Redis keeps nothing on disk, so a restart forgets every
group membership (nothing more would arrive) and every frame in flight. A follower that hears
nothing for `FOLLOW_CHECK_EVERY` seconds, or sees a gap in the seq numbers, joins the group
again and reads the log and the row for what it missed, so a call in flight still gets its whole
answer and its `done`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from chat.streams import message_backlog, message_group
from wizweb.redis_server import redis_connection

log = logging.getLogger(__name__)

# Seconds without a frame before the follower checks the log and its group membership. A check
# costs one query and two Redis commands; a missed frame costs at most this delay.
FOLLOW_CHECK_EVERY = 5.0
REDIS_RETRY_AFTER = 1.0


async def message_follow(message_id: uuid.UUID | str) -> AsyncIterator[dict[str, Any]]:
    layer = get_channel_layer()
    group = message_group(message_id)
    channel = await layer.new_channel()
    last_seq = 0
    # One receive at a time, kept across checks: cancelling a receive can drop a message.
    receiving: asyncio.Future[dict[str, Any]] | None = None
    try:
        while True:
            # (Re)join, then take what the log and the row hold beyond `last_seq`: at first
            # the backlog, later whatever a lost membership or a lost frame kept from us.
            try:
                await layer.group_add(group, channel)
                backlog = await _backlog(message_id, last_seq)
            except (redis.RedisError, OSError):
                log.warning("Lost Redis while following %s; trying again", message_id)
                await asyncio.sleep(REDIS_RETRY_AFTER)
                continue
            for frame in backlog:
                if frame["type"] == "chunk":
                    last_seq = frame["seq"]
                yield frame
                if frame["type"] == "done":
                    return
            while True:
                if receiving is None:
                    receiving = asyncio.ensure_future(layer.receive(channel))
                done, _ = await asyncio.wait({receiving}, timeout=FOLLOW_CHECK_EVERY)
                if not done:
                    break  # a quiet spell: check the log and the group
                received, receiving = receiving, None
                try:
                    frame = received.result().get("frame") or {}
                except (redis.RedisError, OSError):
                    await asyncio.sleep(REDIS_RETRY_AFTER)
                    break
                if frame.get("type") == "chunk":
                    if frame["seq"] <= last_seq:
                        continue
                    if frame["seq"] > last_seq + 1:
                        break  # a chunk went missing: the log has it
                    last_seq = frame["seq"]
                elif frame.get("type") == "done":
                    # The row is saved before `done` is sent: the log and the row have every
                    # chunk this follower may have missed. Only a deleted row has nothing.
                    try:
                        rest = await _backlog(message_id, last_seq)
                    except (redis.RedisError, OSError):
                        rest = []
                    for item in rest or [frame]:
                        yield item
                    return
                yield frame
    finally:
        if receiving is not None:
            receiving.cancel()
            # Let the cancelled receive release the layer's receive lock before this event loop
            # may end (an async view run by async_to_sync has a loop of its own).
            await asyncio.wait({receiving})
        with contextlib.suppress(redis.RedisError, OSError):
            await layer.group_discard(group, channel)


async def _backlog(message_id: uuid.UUID | str, after: int) -> list[dict[str, Any]]:
    return await database_sync_to_async(message_backlog)(redis_connection(), message_id, after)
