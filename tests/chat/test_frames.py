"""The one envelope and send path of chat frames (chat.frames), and the follower that sends each
frame of an answer once and in order (chat.follow.FrameFollower), through the real channel
layer on the private Redis."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from chat.follow import FrameFollower, Verdict
from chat.frames import (
    Broadcast,
    ChunkFrame,
    broadcast,
    broadcast_async,
    conversation_frame,
    frame_event,
    message_group,
    user_group,
)
from chat.models import Conversation, Message
from chat.streams import chunk_log_key
from tests.chat.socket_client import open_socket
from wizweb.channels_sender import ChannelSender
from wizweb.redis_server import redis_connection

MESSAGE = str(uuid.uuid4())


def chunk(seq: int, message: str = MESSAGE) -> ChunkFrame:
    return {
        "type": "chunk",
        "message": message,
        "seq": seq,
        "text": f"t{seq}",
        "channel": "content",
    }


def test_a_generation_frame_and_a_user_frame_go_to_their_own_handlers() -> None:
    assert frame_event(chunk(1)) == {"type": "chat.frame", "frame": chunk(1)}
    named = conversation_frame(uuid.UUID(int=7), "Plans")
    assert frame_event(named)["type"] == "chat.conversation"
    gone = {"type": "conversation_deleted", "conversation": named["conversation"]}
    assert frame_event(gone)["type"] == "chat.conversation"  # type: ignore[arg-type]


def test_the_follower_sends_each_chunk_once_and_in_order() -> None:
    follower = FrameFollower(MESSAGE)
    assert follower.admit({"type": "started", "message": MESSAGE}) is Verdict.SEND
    assert follower.admit({"type": "progress", "message": MESSAGE, "done": 5}) is Verdict.SEND
    assert follower.admit(chunk(1)) is Verdict.SEND
    assert follower.admit(chunk(1)) is Verdict.DROP  # from the log, then live
    assert follower.admit(chunk(3)) is Verdict.GAP  # 2 was lost: the log has it
    assert follower.last_seq == 1
    assert follower.admit(chunk(2)) is Verdict.SEND
    # A stored progress frame read after the text began says nothing new.
    assert follower.admit({"type": "progress", "message": MESSAGE, "done": 9}) is Verdict.DROP
    assert follower.admit(chunk(3, message=str(uuid.uuid4()))) is Verdict.DROP  # not ours
    assert follower.admit({"type": "done", "message": MESSAGE}) is Verdict.SEND
    assert follower.finished
    assert follower.admit(chunk(3)) is Verdict.DROP  # nothing after done


def test_a_follower_that_subscribes_after_a_seq_starts_there() -> None:
    follower = FrameFollower(MESSAGE, after=4)
    assert follower.admit(chunk(4)) is Verdict.DROP
    assert follower.admit(chunk(5)) is Verdict.SEND


async def _received(frames: list[Broadcast], send: Any) -> list[dict[str, Any]]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    groups = {group for group, _ in frames}
    for group in groups:
        await layer.group_add(group, channel)
    try:
        await send(frames)
        return [await asyncio.wait_for(layer.receive(channel), 10) for _ in frames]
    finally:
        for group in groups:
            await layer.group_discard(group, channel)


@pytest.mark.parametrize("side", ["sync", "async"])
def test_frames_reach_their_groups_in_order_from_either_side(side: str) -> None:
    frames: list[Broadcast] = [(message_group(MESSAGE), chunk(seq)) for seq in range(1, 6)]
    frames.append((user_group(12), conversation_frame(uuid.UUID(int=3), "Named")))
    sender = ChannelSender()

    async def send(broadcasts: list[Broadcast]) -> None:
        if side == "async":
            await broadcast_async(get_channel_layer(), broadcasts)
        else:
            await asyncio.to_thread(broadcast, broadcasts, sender=sender)

    received = asyncio.run(_received(frames, send))
    assert received == [frame_event(frame) for _, frame in frames]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_closed")
async def test_a_socket_that_missed_chunks_in_flight_reads_them_from_the_log(
    owner: Any, default_model: Any
) -> None:
    conversation = await Conversation.objects.acreate(owner=owner, title="Lost frames")
    asked = await Message.objects.acreate(
        conversation=conversation, role=Message.Role.USER, content="Hello"
    )
    answer = await Message.objects.acreate(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        parent=asked,
        model=default_model,
        state=Message.State.RUNNING,
    )
    socket = await open_socket(owner)
    await socket.send_json_to({"type": "subscribe", "message": str(answer.id), "after": 0})
    await socket.send_json_to({"type": "ping"})
    assert (await socket.receive_json_from(timeout=10))["type"] == "pong"  # subscribed
    # Three chunks are logged, but only the third reaches the group: the first two were lost
    # with a restarting Redis, say.
    await sync_to_async(redis_connection().rpush)(chunk_log_key(answer.id), "one ", "two ", "three")
    third: ChunkFrame = {**chunk(3, message=str(answer.id)), "text": "three"}
    await broadcast_async(get_channel_layer(), [(message_group(answer.id), third)])
    received = [await socket.receive_json_from(timeout=10) for _ in range(3)]
    await socket.disconnect()
    assert [(f["seq"], f["text"]) for f in received] == [(1, "one "), (2, "two "), (3, "three")]
