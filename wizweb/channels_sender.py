"""Sending channel-layer messages from synchronous code (RQ jobs) through one long-lived loop.

`async_to_sync(group_send)` from a thread without an event loop builds a new loop and a new
Redis connection on every call (about 5 ms each), which is too much per streamed chunk. Here
one daemon thread per process owns one loop and one channel layer; `send()` only queues the
message, and a single drain task sends them one after another, so their order is kept.

Synchronous code sends through it, in the workers and in the web process alike (its sync views);
asynchronous code (consumers, async views) uses the channel layer of its own event loop. The
sender's layer is one of its own, so no layer's Redis connections ever span two loops (see
chat.frames for chat's frames).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

log = logging.getLogger(__name__)


class ChannelSender:
    def __init__(self) -> None:
        self._pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]] | threading.Event] | None = None
        self._start_lock = threading.Lock()
        self._drain_task: asyncio.Task[None] | None = None

    def _ensure_running(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]:
        # A forked child inherits the object but not the thread: start a fresh one there.
        with self._start_lock:
            if self._pid != os.getpid() or self._loop is None or self._queue is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    self._queue = asyncio.Queue()
                    self._drain_task = loop.create_task(self._drain(self._queue))
                    ready.set()
                    loop.run_forever()

                threading.Thread(target=run, name="channel-sender", daemon=True).start()
                ready.wait()
                self._loop, self._pid = loop, os.getpid()
            assert self._queue is not None
            return self._loop, self._queue

    async def _drain(self, queue: asyncio.Queue[Any]) -> None:
        # A layer of its own: the process's shared one may also serve other event loops (a
        # test's, a command's), and channels-redis's close_pools() on it flushes the pools of
        # every loop, this thread's too, from the wrong loop.
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        while True:
            item = await queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            group, message = item
            try:
                await layer.group_send(group, message)
            except Exception:
                log.exception("Could not send %s to group %s", message.get("type"), group)

    def send(self, group: str, message: dict[str, Any]) -> None:
        """Queue one message for a group; returns at once."""
        loop, queue = self._ensure_running()
        loop.call_soon_threadsafe(queue.put_nowait, (group, message))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far has been handed to the channel layer."""
        loop, queue = self._ensure_running()
        done = threading.Event()
        loop.call_soon_threadsafe(queue.put_nowait, done)
        return done.wait(timeout)


# One per process: jobs receive it as a parameter (see chat.jobs) instead of reaching for it.
channel_sender = ChannelSender()
