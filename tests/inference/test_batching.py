"""Many people at once on one real worker: answers written together, each as it would be alone;
an abort, a more urgent answer, a person's share of the slots, a killed worker, and every kind
of constrained request in the same batch."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import jsonschema
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient

from chat.models import Message
from tests.chat.socket_client import collect, done_for, open_socket, send_prompt
from tests.chat.test_generation import SCHEMA, WEATHER
from tests.conftest import PASSWORD, SECOND_MODEL, start_worker

pytestmark = [
    pytest.mark.stack,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel_layer_closed"),
]

QUESTIONS = [f"Tell me fact number {i} about the sea." for i in range(8)]
GREEDY = {"temperature": 0.0, "seed": 4, "max_tokens": 24}


@sync_to_async
def users(count: int) -> list[Any]:
    model = get_user_model()
    return [model.objects.create_user(f"person{i}", password=PASSWORD) for i in range(count)]


async def until_running(ids: list[str], timeout: float = 60) -> None:
    """Wait until every one of these messages is being written."""
    deadline = time.monotonic() + timeout
    while await Message.objects.filter(pk__in=ids, state=Message.State.RUNNING).acount() < len(ids):
        assert time.monotonic() < deadline, "the answers never started"
        await asyncio.sleep(0.1)


async def alone(socket: Any, content: str, **options: Any) -> dict:
    accepted = await send_prompt(socket, content, **options)
    frames = await collect(socket, lambda fs: done_for(fs, accepted["message"]))
    done = done_for(frames, accepted["message"])
    assert done is not None
    return done


async def test_eight_answers_stream_together_and_each_equals_its_run_alone(
    default_model: Any, inference_worker: Any
) -> None:
    people = await users(2)  # the pending limit is four each
    sockets = [await open_socket(p) for p in people]
    accepted = [await send_prompt(sockets[i % 2], q, **GREEDY) for i, q in enumerate(QUESTIONS)]
    ids = [a["message"] for a in accepted]
    frames: list[list[dict]] = [[], []]
    for side in (0, 1):
        mine = ids[side::2]
        frames[side] = await collect(
            sockets[side], lambda fs, m=mine: all(done_for(fs, i) for i in m)
        )
    # Every answer started before any of them ended (send_prompt passes over the frames of
    # the earlier prompts, so the rows tell).
    rows = Message.objects.filter(pk__in=ids).values_list("started_at", "finished_at")
    times = [row async for row in rows]
    assert len(times) == 8
    assert max(s for s, _ in times) < min(f for _, f in times), "waited for another answer"
    together = {
        m: done_for(frames[side], m)["content"]  # type: ignore[index]
        for side in (0, 1)
        for m in ids[side::2]
    }
    for index, question in enumerate(QUESTIONS):
        solo = await alone(sockets[0], question, **GREEDY)
        assert together[ids[index]] == solo["content"], question
    for socket in sockets:
        await socket.disconnect()


async def test_healthz_shows_the_slots_and_the_messages_being_written(
    owner: Any, staff: Any, default_model: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    # An answer of hundreds of tokens, streaming for longer than the first /healthz takes.
    essay = "Write a very long essay about the history of rivers, with many details."
    accepted = await send_prompt(socket, essay, temperature=0.0, max_tokens=400)
    message = accepted["message"]
    await collect(
        socket, lambda fs: any(f["type"] == "chunk" and f["message"] == message for f in fs)
    )
    client = AsyncClient()
    await client.aforce_login(staff)
    deadline = time.monotonic() + 30
    while True:
        body = (await client.get("/healthz")).json()
        (worker,) = [w for w in body["workers"]["inference"] if w["name"] == "test-inference"]
        slots = worker["slots"]
        if message in worker["messages"] and slots["busy"] >= 1 and worker["tokens_per_s"] > 0:
            break
        assert time.monotonic() < deadline, f"/healthz never showed {message}: {worker}"
        await asyncio.sleep(0.2)
    assert slots["total"] == 8
    await socket.send_json_to({"type": "abort", "message": message})
    await collect(socket, lambda fs: done_for(fs, message))
    await socket.disconnect()


async def test_an_abort_of_one_leaves_the_others_intact(
    default_model: Any, inference_worker: Any
) -> None:
    (person,) = await users(1)
    socket = await open_socket(person)
    options = {**GREEDY, "max_tokens": 200}
    accepted = [await send_prompt(socket, q, **options) for q in QUESTIONS[:3]]
    victim = accepted[1]["message"]
    await collect(
        socket, lambda fs: any(f["type"] == "chunk" and f["message"] == victim for f in fs)
    )
    await socket.send_json_to({"type": "abort", "message": victim})
    ids = [a["message"] for a in accepted]
    frames = await collect(socket, lambda fs: all(done_for(fs, i) for i in ids), timeout=120)
    assert done_for(frames, victim)["finish_reason"] == "aborted"  # type: ignore[index]
    for index in (0, 2):
        done = done_for(frames, ids[index])
        assert done is not None and done["finish_reason"] in ("stop", "length")
        solo = await alone(socket, QUESTIONS[index], **options)
        assert done["content"] == solo["content"]
    await socket.disconnect()


async def test_a_high_answer_pauses_a_normal_one_which_ends_the_same(
    staff: Any, owner: Any, serial_pinned_worker: Any
) -> None:
    """One slot: the staff member's high-priority question starts at once, the owner's answer
    is paused (its reader sees only a pause) and then ends as it would have uninterrupted."""
    reader = await open_socket(owner)
    # An answer long enough to be still running when the high one comes.
    options = {"model": SECOND_MODEL, "temperature": 1.0, "seed": 8, "max_tokens": 300}
    essay = "Write a very long essay about the history of rivers, with many details."
    low = await send_prompt(reader, essay, **options)
    await collect(reader, lambda fs: sum(f["type"] == "chunk" for f in fs) >= 3)
    urgent = await open_socket(staff)
    high = await send_prompt(urgent, "Say yes.", model=SECOND_MODEL, max_tokens=8, priority="high")
    high_frames = await collect(urgent, lambda fs: done_for(fs, high["message"]))
    frames = await collect(reader, lambda fs: done_for(fs, low["message"]), timeout=120)
    low_message = await Message.objects.aget(pk=low["message"])
    assert low_message.finished_at is not None
    high_done = done_for(high_frames, high["message"])
    assert high_done is not None and high_done["finish_reason"] in ("stop", "length")
    high_message = await Message.objects.aget(pk=high["message"])
    # The high answer ended while the normal one was still being written.
    assert high_message.finished_at is not None
    assert high_message.finished_at < low_message.finished_at
    chunks = [f for f in frames if f["type"] == "chunk" and f["message"] == low["message"]]
    seqs = [f["seq"] for f in chunks]
    assert seqs == sorted(set(seqs)), "no repeat, no gap"
    done = done_for(frames, low["message"])
    assert done is not None
    uninterrupted = await alone(reader, essay, **options)
    assert done["content"] == uninterrupted["content"]
    await reader.disconnect()
    await urgent.disconnect()


async def test_no_person_takes_more_than_their_share_while_others_wait(
    second_model: Any, log_dir: Any
) -> None:
    """Two slots, a share of one: when a slot frees, the person holding none goes first."""
    worker = start_worker("pinned-two", log_dir, model=SECOND_MODEL, WIZ_PARALLEL="2")
    try:
        hog, first, second = await users(3)
        hog_socket = await open_socket(hog)
        long = {"model": SECOND_MODEL, "max_tokens": 400, "seed": 1}
        blockers = [await send_prompt(hog_socket, q, **long) for q in QUESTIONS[:2]]
        await until_running([b["message"] for b in blockers])
        short = {"model": SECOND_MODEL, "max_tokens": 4, "seed": 1}
        a_socket, b_socket = await open_socket(first), await open_socket(second)
        # The first person's first answer is long: they still hold a slot when the second frees.
        a1 = await send_prompt(a_socket, "One", **{**short, "max_tokens": 300})
        a2 = await send_prompt(a_socket, "Two", **short)
        b1 = await send_prompt(b_socket, "Three", **short)
        for blocker in blockers:
            await hog_socket.send_json_to({"type": "abort", "message": blocker["message"]})
        a_frames = await collect(
            a_socket,
            lambda fs: done_for(fs, a1["message"]) and done_for(fs, a2["message"]),
            timeout=120,
        )
        await collect(b_socket, lambda fs: done_for(fs, b1["message"]))
        for socket in (hog_socket, a_socket, b_socket):
            await socket.disconnect()
    finally:
        worker.stop()
    messages = {
        m.pk.hex: m
        async for m in Message.objects.filter(pk__in=[a1["message"], a2["message"], b1["message"]])
    }
    started = sorted(messages.values(), key=lambda m: m.started_at)
    assert [str(m.pk) for m in started] == [a1["message"], b1["message"], a2["message"]]
    assert a_frames


async def test_constrained_requests_are_batched_with_plain_ones(
    owner: Any, outsider: Any, default_model: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    other = await open_socket(outsider)
    plain = await send_prompt(socket, QUESTIONS[0], **{**GREEDY, "max_tokens": 60})
    grammar = await send_prompt(
        socket, "Is the sky blue?", seed=2, max_tokens=10, grammar='root ::= "yes" | "no"'
    )
    schema = await send_prompt(
        other,
        "Describe a cat as JSON.",
        seed=3,
        max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}},
    )
    tools = await send_prompt(
        other, "What is the weather in Paris?", seed=1, tools=[WEATHER], tool_choice="required"
    )
    mine = await collect(
        socket, lambda fs: done_for(fs, plain["message"]) and done_for(fs, grammar["message"])
    )
    theirs = await collect(
        other, lambda fs: done_for(fs, schema["message"]) and done_for(fs, tools["message"])
    )
    await socket.disconnect()
    await other.disconnect()
    assert done_for(mine, grammar["message"])["content"] in ("yes", "no")  # type: ignore[index]
    done = done_for(theirs, schema["message"])
    assert done is not None and done["finish_reason"] == "stop"
    jsonschema.validate(json.loads(done["content"]), SCHEMA)
    called = done_for(theirs, tools["message"])
    assert called is not None and called["finish_reason"] == "tool_calls"
    assert called["tool_calls"][0]["function"]["name"] == "get_weather"
    # They were written together: the plain answer started before the others ended.
    ids = [plain["message"], grammar["message"], schema["message"], tools["message"]]
    rows = Message.objects.filter(pk__in=ids).values_list("started_at", "finished_at")
    started = [row async for row in rows]
    assert max(s for s, _ in started) < min(f for _, f in started)


async def test_a_worker_killed_with_eight_answers_fails_them_all_and_its_successor_serves(
    second_model: Any, log_dir: Any
) -> None:
    worker = start_worker("pinned-eight", log_dir, model=SECOND_MODEL)
    try:
        people = await users(2)
        sockets = [await open_socket(p) for p in people]
        options = {"model": SECOND_MODEL, "max_tokens": 600, "seed": 2, "temperature": 1.0}
        accepted = [
            await send_prompt(sockets[i % 2], q, **options) for i, q in enumerate(QUESTIONS)
        ]
        ids = [a["message"] for a in accepted]
        seen: list[list[dict]] = [[], []]
        for side in (0, 1):
            mine = ids[side::2]
            seen[side] = await collect(
                sockets[side],
                lambda fs, m=mine: all(
                    any(f["type"] == "chunk" and f["message"] == i for f in fs) for i in m
                ),
            )
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait()
        for side in (0, 1):
            mine = ids[side::2]
            seen[side] += await collect(
                sockets[side], lambda fs, m=mine: all(done_for(fs, i) for i in m), timeout=60
            )
        for side in (0, 1):
            for message in ids[side::2]:
                done = done_for(seen[side], message)
                assert done is not None and done["finish_reason"] == "error"
                received = "".join(
                    f["text"]
                    for f in seen[side]
                    if f["type"] == "chunk" and f["message"] == message
                )
                assert received and done["content"].startswith(received)
        failed = await Message.objects.filter(pk__in=ids, state=Message.State.FAILED).acount()
        assert failed == 8
        worker = start_worker("pinned-eight", log_dir, model=SECOND_MODEL)
        done = await alone(sockets[0], "Hello", model=SECOND_MODEL, max_tokens=4, seed=1)
        assert done["finish_reason"] in ("stop", "length")
        for socket in sockets:
            await socket.disconnect()
    finally:
        worker.stop()


async def test_a_follow_up_after_twenty_other_conversations_reads_only_what_is_new(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    """Twenty conversations take the worker's eight slots after the first turn: the first
    conversation's cache was saved to host memory and its second turn starts from it."""
    socket = await open_socket(owner)
    first = await send_prompt(socket, "Name a fruit and say why it is good.", seed=1, max_tokens=30)
    turn_one = await collect(socket, lambda fs: done_for(fs, first["message"]))
    usage = done_for(turn_one, first["message"])["usage"]  # type: ignore[index]
    for wave in range(5):  # four at a time: the pending limit
        others = [
            await send_prompt(socket, f"Question {wave}.{i}?", max_tokens=4) for i in range(4)
        ]
        await collect(socket, lambda fs, o=others: all(done_for(fs, a["message"]) for a in o))
    await socket.send_json_to(
        {
            "type": "prompt",
            "content": "And another one?",
            "conversation": first["conversation"],
            "options": {"seed": 1, "max_tokens": 8},
        }
    )
    follow_up = await socket.receive_json_from(timeout=10)
    assert follow_up["type"] == "accepted"
    frames = await collect(socket, lambda fs: done_for(fs, follow_up["message"]))
    await socket.disconnect()
    done = done_for(frames, follow_up["message"])
    assert done is not None and done["finish_reason"] in ("stop", "length")
    # More than the system prompt every conversation shares: the whole first turn at least.
    cached = done["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= usage["prompt_tokens"], (cached, usage)
