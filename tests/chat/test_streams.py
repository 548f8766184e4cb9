"""How long a stream gathers text into one chunk, with few and with many answers streaming."""

from __future__ import annotations

import gc
import uuid

from django.conf import settings

from chat.streams import MAX_INTERVAL_FACTOR, STREAMS_PER_INTERVAL, MessageStream
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
