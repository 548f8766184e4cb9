"""Following one generation: its frames, from the backlog (the chunk log and the row) and then
live from its group, each once and in order, until `done`.

`FrameFollower` is what one reader has been sent of one answer; the chat socket keeps one per
answer it follows (chat.consumers), and `message_follow` uses one for the HTTP APIs.

Live frames can be missed: the private Redis keeps nothing on disk, so a restart forgets every
group membership (nothing more would arrive) and every frame in flight. A reader that sees a
gap in the seq numbers reads the log for what it missed; `message_follow`, which has no socket
to be told of a reconnect, also checks after `FOLLOW_CHECK_EVERY` seconds without a frame, and
joins the group again, so a call in flight still gets its whole answer and its `done`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import redis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from chat.frames import ChunkFrame, DoneFrame, message_group
from chat.streams import message_backlog
from wizweb.redis_server import redis_connection

log = logging.getLogger(__name__)

# Seconds without a frame before the follower checks the log and its group membership. A check
# costs one query and two Redis commands; a missed frame costs at most this delay.
FOLLOW_CHECK_EVERY = 5.0
REDIS_RETRY_AFTER = 1.0


class Verdict(enum.Enum):
    SEND = "send"  # new and in order: send it
    DROP = "drop"  # sent already, or no longer wanted
    GAP = "gap"  # chunks before it were missed: read the backlog instead


class FrameFollower:
    """What one reader has been sent of one answer: the last chunk's seq and whether `done`
    went out. Every frame of the answer, from the log or live, passes `admit` first."""

    def __init__(self, message_id: uuid.UUID | str, after: int = 0) -> None:
        self.message_id = str(message_id)
        self.last_seq = after
        self.finished = False

    def admit(self, frame: Mapping[str, Any]) -> Verdict:
        if self.finished or frame.get("message") != self.message_id:
            return Verdict.DROP
        kind = frame.get("type")
        if kind == "chunk":
            if frame["seq"] <= self.last_seq:
                return Verdict.DROP
            if frame["seq"] > self.last_seq + 1:
                return Verdict.GAP
            self.last_seq = frame["seq"]
        elif kind == "progress" and self.last_seq > 0:
            return Verdict.DROP  # a stored one, read after the text began
        elif kind == "done":
            self.finished = True
        return Verdict.SEND

    async def backlog(self) -> list[ChunkFrame | DoneFrame]:
        """What the log and the row hold beyond what was sent (see message_backlog)."""
        return await database_sync_to_async(message_backlog)(
            redis_connection(), self.message_id, self.last_seq
        )


async def message_follow(message_id: uuid.UUID | str) -> AsyncIterator[Mapping[str, Any]]:
    layer = get_channel_layer()
    group = message_group(message_id)
    channel = await layer.new_channel()
    follower = FrameFollower(message_id)
    # One receive at a time, kept across checks: cancelling a receive can drop a message.
    receiving: asyncio.Future[dict[str, Any]] | None = None
    try:
        while True:
            # (Re)join, then take what the log and the row hold beyond what was sent: at first
            # the backlog, later whatever a lost membership or a lost frame kept from us.
            try:
                await layer.group_add(group, channel)
                backlog = await follower.backlog()
            except (redis.RedisError, OSError):
                log.warning("Lost Redis while following %s; trying again", message_id)
                await asyncio.sleep(REDIS_RETRY_AFTER)
                continue
            for frame in backlog:
                if follower.admit(frame) is Verdict.SEND:
                    yield frame
                if follower.finished:
                    return
            while True:
                if receiving is None:
                    receiving = asyncio.ensure_future(layer.receive(channel))
                done, _ = await asyncio.wait({receiving}, timeout=FOLLOW_CHECK_EVERY)
                if not done:
                    break  # a quiet spell: check the log and the group
                received, receiving = receiving, None
                try:
                    live: Mapping[str, Any] = received.result().get("frame") or {}
                except (redis.RedisError, OSError):
                    await asyncio.sleep(REDIS_RETRY_AFTER)
                    break
                if live.get("type") == "done":
                    # The row is saved before `done` is sent: the log and the row have every
                    # chunk this follower may have missed. Only a deleted row has nothing.
                    rest: list[Mapping[str, Any]] = []
                    with contextlib.suppress(redis.RedisError, OSError):
                        rest = list(await follower.backlog())
                    for item in rest or [live]:
                        if follower.admit(item) is Verdict.SEND:
                            yield item
                    return
                verdict = follower.admit(live)
                if verdict is Verdict.GAP:
                    break  # a chunk went missing: the log has it
                if verdict is Verdict.SEND:
                    yield live
    finally:
        if receiving is not None:
            receiving.cancel()
            # Let the cancelled receive release the layer's receive lock before this event loop
            # may end (an async view run by async_to_sync has a loop of its own).
            await asyncio.wait({receiving})
        with contextlib.suppress(redis.RedisError, OSError):
            await layer.group_discard(group, channel)
