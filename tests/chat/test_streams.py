"""How long a stream gathers text into one chunk, with few and with many answers streaming."""

from __future__ import annotations

import gc
import time
import uuid
from typing import Any

from django.conf import settings

from chat.streams import (
    MAX_INTERVAL_FACTOR,
    STREAMS_PER_INTERVAL,
    MessageStream,
    chunk_log_entry,
    chunk_log_key,
    chunk_log_parse,
    chunk_log_read,
)
from wizweb.channels_sender import ChannelSender
from wizweb.redis_server import redis_connection


def streams(count: int) -> list[MessageStream]:
    sender, connection = ChannelSender(), redis_connection()
    return [
        MessageStream(sender=sender, connection=connection, message_id=uuid.uuid4())
        for _ in range(count)
    ]


def test_chunks_gather_longer_while_many_answers_stream() -> None:
    base = settings.WIZ_CHUNK_INTERVAL
    (alone,) = streams(1)
    assert alone.interval == base
    few = streams(STREAMS_PER_INTERVAL - 1)
    assert alone.interval == base
    many = streams(2 * STREAMS_PER_INTERVAL)
    assert alone.interval == base * 3  # 1 + 2 + 6 = 9 streams, three intervals' worth
    crowd = streams(10 * STREAMS_PER_INTERVAL)
    assert alone.interval == base * MAX_INTERVAL_FACTOR
    # Streams that are gone (finished, or dropped by a failed job) count no more.
    del few, many, crowd
    gc.collect()
    assert alone.interval == base


class Recorder(ChannelSender):
    """Keeps the frames instead of sending them to the channel layer."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[dict[str, object]] = []

    def send(self, group: str, event: dict[str, Any]) -> None:
        self.frames.append(event["frame"])


def test_a_thinking_answer_streams_and_logs_one_channel_per_chunk() -> None:
    sender, connection = Recorder(), redis_connection()
    message_id = uuid.uuid4()
    stream = MessageStream(sender=sender, connection=connection, message_id=message_id)
    stream._last_flush = time.monotonic() + 3600  # gather everything until the flush below
    stream.text("Let me ", "reasoning")
    stream.text("see.", "reasoning")
    stream.text("It is 4.", "content")
    stream.text("\x00odd", "content")  # a content chunk that looks like the log's mark
    stream.flush()
    chunks = [(f["channel"], f["text"], f["seq"]) for f in sender.frames]
    assert chunks == [("reasoning", "Let me see.", 1), ("content", "It is 4.\x00odd", 2)]
    # What a reader catching up gets from the log is the same.
    assert chunk_log_read(connection, message_id, 0) == [
        ("reasoning", "Let me see."),
        ("content", "It is 4.\x00odd"),
    ]
    connection.delete(chunk_log_key(message_id))


def test_the_chunk_log_keeps_plain_text_for_answers_without_thinking() -> None:
    assert chunk_log_entry("Hello", "content") == "Hello"
    for channel, text in (("reasoning", "hm"), ("content", "\x00x"), ("content", "")):
        assert chunk_log_parse(chunk_log_entry(text, channel)) == (channel, text)
    assert chunk_log_parse("Hello") == ("content", "Hello")
