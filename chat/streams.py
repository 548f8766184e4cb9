"""The live side of one generation: its frames to the message's group, its chunk log in Redis.

Every chunk is appended to a Redis list before it is broadcast; the list index is its `seq`, so
seq numbers have no gaps and a browser that (re)subscribes can be given exactly what it missed
(see `ChatConsumer.catch_up`). Text is coalesced for `WIZ_CHUNK_INTERVAL` seconds so the
pipeline costs little per token. Each append also renews the log's expiry, so the log of an
answer whose worker died mid-way is gone an hour later like any other.

The private Redis keeps nothing on disk. If it restarts while an answer is written, the writer
keeps its text until Redis is back and then writes the log again whole, so every seq still
means the same text; the abort watcher listens again. Followers catch up from the log
(`chat.follow`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings

from chat.frames import (
    ChunkFrame,
    DoneFrame,
    GenerationFrame,
    ProgressFrame,
    frame_event,
    message_group,
)
from wizweb.channels_sender import ChannelSender

log = logging.getLogger(__name__)

# Kept after the answer is saved, so a late subscriber still gets the chunks it missed.
CHUNK_LOG_TTL = 3600
# Every chunk costs the worker, Redis and the web process some CPU, taken from llama.cpp on a
# small box. With many answers streaming from one process, each gathers text for longer:
# WIZ_CHUNK_INTERVAL per STREAMS_PER_INTERVAL answers, at most MAX_INTERVAL_FACTOR times it.
STREAMS_PER_INTERVAL = 3
MAX_INTERVAL_FACTOR = 4.0

# The streams of this process not yet finished (a stream dropped unfinished leaves with it).
_streaming: weakref.WeakSet[MessageStream] = weakref.WeakSet()


# A reasoning chunk is logged behind this mark (a content chunk that starts with it, too), so
# that the log stays plain text for the answers of models that do not think.
CHANNEL_MARK = "\x00"


def chunk_log_entry(text: str, channel: str) -> str:
    if channel == "content" and not text.startswith(CHANNEL_MARK):
        return text
    return f"{CHANNEL_MARK}{channel}{CHANNEL_MARK}{text}"


def chunk_log_parse(entry: str) -> tuple[str, str]:
    """(channel, text) of a logged chunk."""
    if not entry.startswith(CHANNEL_MARK):
        return "content", entry
    channel, _, text = entry[1:].partition(CHANNEL_MARK)
    return channel, text


def chunk_log_key(message_id: uuid.UUID | str) -> str:
    return f"wiz:chunks:{uuid.UUID(str(message_id)).hex}"


def progress_key(message_id: uuid.UUID | str) -> str:
    """The latest `progress` frame of an answer whose long prompt is being read."""
    return f"wiz:progress:{uuid.UUID(str(message_id)).hex}"


# A reading that stalls (its worker died) leaves no progress behind for long.
PROGRESS_TTL = 600


def progress_frame_read(
    connection: redis.Redis, message_id: uuid.UUID | str
) -> dict[str, Any] | None:
    """The latest `progress` frame of a message, for a socket that subscribes while its prompt
    is read (a reload, a reconnect); None when there is none."""
    raw = connection.get(progress_key(message_id))
    return json.loads(raw) if raw else None  # type: ignore[arg-type]


def abort_key(message_id: uuid.UUID | str) -> str:
    return f"wiz:abort:{uuid.UUID(str(message_id)).hex}"


ABORT_CHANNEL_PREFIX = "wiz:abort-now:"


def abort_channel(message_id: uuid.UUID | str) -> str:
    return ABORT_CHANNEL_PREFIX + uuid.UUID(str(message_id)).hex


def chunk_log_read(
    connection: redis.Redis, message_id: uuid.UUID | str, after: int
) -> list[tuple[str, str]]:
    """The chunks with seq > after, in order (the first has seq after + 1), as (channel, text)."""
    raw: list[bytes] = connection.lrange(chunk_log_key(message_id), after, -1)  # type: ignore[assignment]
    return [chunk_log_parse(item.decode("utf-8")) for item in raw]


def message_backlog(
    connection: redis.Redis, message_id: uuid.UUID | str, after: int
) -> list[ChunkFrame | DoneFrame]:
    """What a message has beyond chunk `after`: its logged chunks, then `done` if it finished.

    Read the log before the row: a finished row means the log was complete when read. A reader
    that joined the message's group first gets everything later as live frames, and drops any
    seq it has already seen.
    """
    from chat.models import Message

    message_id = str(message_id)
    chunks = chunk_log_read(connection, message_id, after)
    message = Message.objects.filter(pk=message_id).first()
    if message is None:
        return []
    if not chunks and message.is_finished and after == 0:
        # The log has expired: the saved answer stands in for its chunks.
        chunks = [
            (channel, text)
            for channel, text in (("reasoning", message.reasoning), ("content", message.content))
            if text
        ]
    frames: list[ChunkFrame | DoneFrame] = [
        {"type": "chunk", "message": message_id, "seq": seq, "text": text, "channel": channel}
        for seq, (channel, text) in enumerate(chunks, start=after + 1)
    ]
    if message.is_finished:
        frames.append(message.done_frame())
    return frames


class _AbortListener:
    """One thread and one Redis subscription (a pattern over every abort channel) per process,
    for all the answers it writes: a thread and a connection per answer, each waking five
    times a second, cost CPU that llama.cpp wants on a small box."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watching: dict[str, Callable[[], None]] = {}  # message hex -> on_abort
        self._pid = 0

    def add(
        self, connection: redis.Redis, message_id: uuid.UUID | str, on_abort: Callable[[], None]
    ) -> None:
        key = uuid.UUID(str(message_id)).hex
        with self._lock:
            self._watching[key] = on_abort
            if self._pid != os.getpid():  # first use, or a forked child: no thread here yet
                self._pid = os.getpid()
                threading.Thread(
                    target=self._run, args=(connection,), name="abort-listener", daemon=True
                ).start()
        try:
            # Asked before we listened: the key says so.
            if connection.exists(abort_key(key)):
                self._fire(key)
        except redis.RedisError:
            pass  # the listener checks every key again once Redis is back

    def discard(self, message_id: uuid.UUID | str) -> None:
        with self._lock:
            self._watching.pop(uuid.UUID(str(message_id)).hex, None)

    def _fire(self, key: str) -> None:
        with self._lock:
            on_abort = self._watching.get(key)
        if on_abort is not None:
            on_abort()

    def _run(self, connection: redis.Redis) -> None:
        while True:
            pubsub = connection.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe(ABORT_CHANNEL_PREFIX + "*")
                # Aborts asked while we were not listening (a Redis restart) left their keys.
                with self._lock:
                    keys = list(self._watching)
                for key in keys:
                    if connection.exists(abort_key(key)):
                        self._fire(key)
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "pmessage":
                        channel = message["channel"]
                        if isinstance(channel, bytes):
                            channel = channel.decode()
                        self._fire(channel.removeprefix(ABORT_CHANNEL_PREFIX))
            except redis.RedisError:
                # Redis is away (restarting): listen again once it is back.
                log.warning("Lost Redis while listening for aborts; listening again")
                time.sleep(1.0)
            finally:
                with contextlib.suppress(redis.RedisError):
                    pubsub.close()


_abort_listener = _AbortListener()


class AbortWatcher:
    """Calls `on_abort` as soon as someone asks to stop the message, from the process's abort
    listener thread, so a generation stops within a token, not at its next chunk."""

    def __init__(
        self, *, connection: redis.Redis, message_id: uuid.UUID | str, on_abort: Callable[[], None]
    ) -> None:
        self.connection = connection
        self.message_id = message_id
        self.on_abort = on_abort

    def __enter__(self) -> AbortWatcher:
        _abort_listener.add(self.connection, self.message_id, self.on_abort)
        return self

    def __exit__(self, *exc: object) -> None:
        _abort_listener.discard(self.message_id)


class MessageStream:
    def __init__(
        self, *, sender: ChannelSender, connection: redis.Redis, message_id: uuid.UUID
    ) -> None:
        self.sender = sender
        self.connection = connection
        self.message_id = str(message_id)
        self.group = message_group(message_id)
        self.log_key = chunk_log_key(message_id)
        _streaming.add(self)
        self._buffer: list[tuple[str, str]] = []  # (channel, text) not yet sent
        self._logged: list[str] = []  # what the log holds, chunk by chunk
        self._redis_away = False
        # The first text goes out at once: time to first token is what people notice.
        self._last_flush = 0.0

    def frame(self, frame: GenerationFrame) -> None:
        self.sender.send(self.group, frame_event(frame))

    def started(self, *, model: str, worker: str) -> None:
        self.connection.delete(self.log_key)
        self.frame(
            {"type": "started", "message": self.message_id, "model": model, "worker": worker}
        )

    def progress(self, *, done: int, total: int) -> None:
        """How far the reading of a long prompt has got (the scheduler says how often): sent at
        once, and kept for a page that subscribes meanwhile. Never logged as a chunk: seq
        numbers are the answer's text."""
        frame: ProgressFrame = {
            "type": "progress",
            "message": self.message_id,
            "done": done,
            "total": total,
        }
        # Redis away: only a late subscriber misses it; the live frame goes through the layer.
        with contextlib.suppress(redis.RedisError):
            self.connection.set(progress_key(self.message_id), json.dumps(frame), ex=PROGRESS_TTL)
        self.frame(frame)

    @property
    def interval(self) -> float:
        """How long text is gathered into one chunk, longer while many answers stream."""
        factor = min(MAX_INTERVAL_FACTOR, max(1.0, len(_streaming) / STREAMS_PER_INTERVAL))
        return float(settings.WIZ_CHUNK_INTERVAL * factor)

    def text(self, text: str, channel: str = "content") -> None:
        if self._buffer and self._buffer[-1][0] == channel:
            self._buffer[-1] = (channel, self._buffer[-1][1] + text)
        else:
            self._buffer.append((channel, text))
        if time.monotonic() - self._last_flush >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Send what is buffered: one chunk per channel, in order (usually just one)."""
        self._last_flush = time.monotonic()
        while self._buffer:
            channel, text = self._buffer[0]
            try:
                seq = self._append(chunk_log_entry(text, channel))
            except redis.RedisError:
                # Redis is away (restarting, most likely). The text stays buffered for the
                # next flush; the answer itself goes on, and its row gets the whole text at
                # the end.
                if not self._redis_away:
                    log.warning("Lost Redis while streaming %s; keeping its text", self.message_id)
                self._redis_away = True
                return
            self._redis_away = False
            self._buffer.pop(0)
            chunk: ChunkFrame = {
                "type": "chunk",
                "message": self.message_id,
                "seq": seq,
                "text": text,
                "channel": channel,
            }
            self.frame(chunk)

    def _append(self, text: str) -> int:
        pipe = self.connection.pipeline(transaction=False)
        pipe.rpush(self.log_key, text)
        pipe.expire(self.log_key, CHUNK_LOG_TTL)
        seq = int(pipe.execute()[0])
        if seq != len(self._logged) + 1:
            # The log is not what we wrote: Redis restarted and forgot it. Write it again whole,
            # in one transaction, so that seq n means the same text to every reader.
            pipe = self.connection.pipeline(transaction=True)
            pipe.delete(self.log_key)
            pipe.rpush(self.log_key, *self._logged, text)
            pipe.expire(self.log_key, CHUNK_LOG_TTL)
            pipe.execute()
            seq = len(self._logged) + 1
        self._logged.append(text)
        return seq

    def finished(self, done_frame: DoneFrame) -> None:
        _streaming.discard(self)
        self.flush()
        try:
            self.connection.delete(abort_key(self.message_id), progress_key(self.message_id))
        except redis.RedisError:
            log.warning("Could not clear the abort flag of %s", self.message_id, exc_info=True)
        self.frame(done_frame)
        self.sender.flush()
