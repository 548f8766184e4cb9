"""The /ws/chat/ consumer against the real ASGI application, real Redis and a real worker."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from socket import gethostname
from typing import Any

import llama_cpp
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from chat.models import Conversation, Message
from chat.streams import MessageStream
from inference.presence import WorkerState, worker_state_publish, worker_state_remove
from tests.chat.socket_client import (
    collect,
    connect,
    frames_until_done,
    next_of_type,
    open_socket,
    send_prompt,
)
from tests.conftest import PASSWORD, SECOND_MODEL, session_cookie
from wizweb.channels_sender import ChannelSender
from wizweb.redis_server import redis_connection

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel_layer_closed"),
]


def expected_prompt_tokens(model_path: str, messages: list[dict[str, str]]) -> int:
    """The prompt's size as llama-cpp-python's own chat path would count it."""
    llama = llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)
    eos = llama._model.token_get_text(llama.token_eos())
    bos = llama._model.token_get_text(llama.token_bos())
    template = llama.metadata["tokenizer.chat_template"]
    formatted = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)(
        messages=messages
    )
    tokens = llama.tokenize(formatted.prompt.encode(), add_bos=False, special=True)
    llama.close()
    return len(tokens)


async def test_it_streams_a_real_answer_in_order_and_saves_it(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    prompt = "Name three colours of the rainbow."
    options = {"seed": 7, "temperature": 0.2, "max_tokens": 60}
    await socket.send_json_to(
        {
            "type": "prompt",
            "content": prompt,
            "conversation": None,
            "options": options,
            "client_id": "c-1",
        }
    )
    accepted = await socket.receive_json_from(timeout=10)
    assert accepted["type"] == "accepted"
    assert accepted["client_id"] == "c-1"
    assert accepted["queue_position"] >= 1
    frames = await frames_until_done(socket)
    await socket.disconnect()

    chunks = [f for f in frames if f["type"] == "chunk"]
    done = frames[-1]
    assert done["type"] == "done", frames
    assert done["message"] == accepted["message"]
    assert [c["seq"] for c in chunks] == list(range(1, len(chunks) + 1))
    assert len(chunks) >= 2, "the answer should stream in more than one chunk"
    assert "".join(c["text"] for c in chunks) == done["content"]
    assert done["content"].strip()
    assert done["finish_reason"] in ("stop", "length")

    usage = done["usage"]
    expected = await sync_to_async(expected_prompt_tokens)(
        str(default_model.path), [{"role": "user", "content": prompt}]
    )
    assert usage["prompt_tokens"] == expected
    llama = llama_cpp.Llama(model_path=str(default_model.path), vocab_only=True, verbose=False)
    retokenized = len(llama.tokenize(done["content"].encode(), add_bos=False))
    # Sampled tokens may differ from a fresh tokenisation of the same text by a merge or two.
    assert abs(usage["completion_tokens"] - retokenized) <= 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert set(done["timings"]) == {"queue_ms", "ttft_ms", "total_ms", "tokens_per_s"}
    assert done["timings"]["tokens_per_s"] > 0

    message = await Message.objects.aget(pk=accepted["message"])
    assert message.state == Message.State.DONE
    assert message.content == done["content"]
    assert message.completion_tokens == usage["completion_tokens"]
    assert message.prompt_tokens == usage["prompt_tokens"]
    user_message = await Message.objects.aget(pk=accepted["user_message"])
    assert user_message.content == prompt
    assert str(message.parent_id) == accepted["user_message"]


async def test_it_continues_a_conversation_with_its_history(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    await socket.send_json_to({"type": "prompt", "content": "Hello!", "options": {"seed": 1}})
    first = await socket.receive_json_from(timeout=10)
    first_frames = await frames_until_done(socket)
    await socket.send_json_to(
        {
            "type": "prompt",
            "content": "And again?",
            "conversation": first["conversation"],
            "options": {"seed": 1},
        }
    )
    second = await socket.receive_json_from(timeout=10)
    second_frames = await frames_until_done(socket)
    await socket.disconnect()
    assert second["conversation"] == first["conversation"]
    # The second prompt carries the first exchange, so it is longer than the prompt alone.
    assert second_frames[-1]["usage"]["prompt_tokens"] > (
        first_frames[-1]["usage"]["prompt_tokens"] + first_frames[-1]["usage"]["completion_tokens"]
    )
    assert await Message.objects.filter(conversation_id=first["conversation"]).acount() == 4


async def test_it_closes_an_anonymous_socket(db: None) -> None:
    socket = await connect(None)
    connected, _ = await socket.connect()
    if connected:
        output = await socket.receive_output(timeout=5)
        assert output["type"] == "websocket.close"
    await socket.disconnect()


async def test_it_refuses_a_socket_from_another_origin(owner: Any) -> None:
    socket = await connect(owner, origin="http://evil.example")
    connected, _ = await socket.connect()
    assert not connected
    await socket.disconnect()


async def test_it_refuses_a_prompt_into_another_users_conversation(
    owner: Any, outsider: Any, default_model: Any
) -> None:
    conversation = await Conversation.objects.acreate(owner=owner, title="private")
    socket = await open_socket(outsider)
    await socket.send_json_to(
        {"type": "prompt", "content": "hi", "conversation": str(conversation.id), "client_id": "x"}
    )
    frame = await socket.receive_json_from(timeout=10)
    assert frame["type"] == "error"
    assert frame["code"] == "not_found"
    assert frame["client_id"] == "x"
    assert await Message.objects.filter(conversation=conversation).acount() == 0
    await socket.disconnect()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


MALFORMED = [
    ("this is not json", "invalid_json"),
    # A lone surrogate decodes to a str that cannot be written as UTF-8 when it is saved or sent.
    ('{"type": "prompt", "content": "hi \\ud800"}', "invalid_json"),
    ('{"type": "prompt", "content": "hi", "options": {"\\udfff": 1}}', "invalid_json"),
    # Too deep for json.loads itself (a RecursionError), and deep enough for what follows it.
    ('{"type": "ping", "client_id": ' + nested(100_000) + "}", "invalid_json"),
    ('{"type": "prompt", "content": "hi", "client_id": ' + nested(65) + "}", "invalid_json"),
    ('{"type": "prompt", "content": "hi", "options": {"seed": NaN}}', "invalid_json"),
    ("[1, 2, 3]", "invalid_frame"),
    (json.dumps({"content": "no type"}), "invalid_frame"),
    (json.dumps({"type": "teleport"}), "unknown_type"),
    (json.dumps({"type": "prompt", "content": ""}), "empty_prompt"),
    (json.dumps({"type": "prompt", "content": "   "}), "empty_prompt"),
    (json.dumps({"type": "prompt", "content": 42}), "empty_prompt"),
    (json.dumps({"type": "prompt", "content": "x" * 40_000}), "prompt_too_long"),
    (json.dumps({"type": "prompt", "content": "hi", "conversation": "nope"}), "invalid_frame"),
    (
        json.dumps({"type": "prompt", "content": "hi", "options": {"temperature": 9}}),
        "invalid_options",
    ),
    (json.dumps({"type": "prompt", "content": "hi", "options": {"warp": 1}}), "invalid_options"),
    (
        json.dumps({"type": "prompt", "content": "hi", "options": {"priority": "high"}}),
        "invalid_options",
    ),
]


@pytest.mark.parametrize(("raw", "code"), MALFORMED)
async def test_it_answers_a_malformed_frame_with_an_error_and_stays_open(
    owner: Any, default_model: Any, raw: str, code: str
) -> None:
    socket = await open_socket(owner)
    await socket.send_to(text_data=raw)
    frame = await socket.receive_json_from(timeout=10)
    assert frame["type"] == "error"
    assert frame["code"] == code
    assert frame["message"].endswith((".", "?"))
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from(timeout=5) == {"type": "pong"}
    await socket.disconnect()
    assert await Message.objects.acount() == 0


async def test_it_names_the_bad_option(owner: Any, default_model: Any) -> None:
    socket = await open_socket(owner)
    await socket.send_json_to(
        {"type": "prompt", "content": "hi", "options": {"top_p": 1.5}, "client_id": 3}
    )
    frame = await socket.receive_json_from(timeout=10)
    assert frame["code"] == "invalid_options"
    assert frame["key"] == "top_p"
    assert "top_p" in frame["message"]
    assert frame["client_id"] == 3
    await socket.disconnect()


LONG_PROMPT = "Write a very long essay about the history of rivers, with many details."


def pasted_document(lines: int, about: str) -> str:
    """A long document pasted into the prompt (about 12 tokens a line), unlike any other test's
    so that no worker has its start cached."""
    body = " ".join(f"Line {i}: the tide comes in and goes out at {about}." for i in range(lines))
    return f"{body}\nSummarise this."


async def test_a_long_prompt_reports_its_reading_before_the_first_chunk(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    document = pasted_document(80, "the reading harbour")
    accepted = await send_prompt(socket, document, max_tokens=8, seed=1, temperature=0)
    frames = await frames_until_done(socket, timeout=300)
    await socket.disconnect()
    done = frames[-1]
    assert done["type"] == "done" and done["finish_reason"] in ("stop", "length"), done
    total = done["usage"]["prompt_tokens"]
    assert total > 2 * 512, "read in several steps"
    mine = [f for f in frames if f.get("message") == accepted["message"]]
    kinds = [f["type"] for f in mine]
    progress = [f for f in mine if f["type"] == "progress"]
    assert progress, kinds
    first_text = next(i for i, kind in enumerate(kinds) if kind in ("chunk", "done"))
    assert max(i for i, kind in enumerate(kinds) if kind == "progress") < first_text, kinds
    read = [p["done"] for p in progress]
    assert read == sorted(set(read)), "each further than the one before"
    assert read[-1] == total
    assert {p["total"] for p in progress} == {total}
    assert set(progress[0]) == {"type", "message", "done", "total"}


async def test_a_page_that_subscribes_while_a_prompt_is_read_learns_how_far(
    owner: Any, default_model: Any
) -> None:
    conversation = await Conversation.objects.acreate(owner=owner, title="Reading")
    prompt = await Message.objects.acreate(
        conversation=conversation, role="user", content="A long document…"
    )
    # Being written by a worker that looks alive to any reaper: this process, beating once.
    writer = WorkerState(name="reader-test", host=gethostname(), pid=os.getpid(), run="r1")
    message = await Message.objects.acreate(
        conversation=conversation,
        parent=prompt,
        role="assistant",
        state="running",
        worker=writer.name,
        worker_run=writer.run,
    )
    writer.messages = [str(message.id)]
    worker_state_publish(redis_connection(), writer)
    stream = MessageStream(
        sender=ChannelSender(), connection=redis_connection(), message_id=message.id
    )
    stream.progress(done=1024, total=3000)
    page = await open_socket(owner)
    await page.send_json_to({"type": "subscribe", "message": str(message.id), "after": 0})
    frame = await page.receive_json_from(timeout=10)
    assert frame == {"type": "progress", "message": str(message.id), "done": 1024, "total": 3000}
    # Once the answer has text, a reader is past the reading: nothing stored is sent again.
    stream.text("Hello")
    stream.flush()
    late = await open_socket(owner)
    await late.send_json_to({"type": "subscribe", "message": str(message.id), "after": 0})
    chunk = await late.receive_json_from(timeout=10)
    assert chunk["type"] == "chunk" and chunk["text"] == "Hello"
    assert await late.receive_nothing(timeout=0.5)
    await page.disconnect()
    await late.disconnect()
    worker_state_remove(redis_connection(), writer.name)


async def test_it_aborts_a_running_generation_and_keeps_its_text(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    accepted = await send_prompt(socket, LONG_PROMPT, max_tokens=500, seed=3)
    message_id = accepted["message"]
    chunks = [await next_of_type(socket, "chunk", message_id)]
    await socket.send_json_to({"type": "abort", "message": message_id})
    frames = await frames_until_done(socket)
    await socket.disconnect()
    chunks += [f for f in frames if f["type"] == "chunk"]
    done = frames[-1]
    assert done["finish_reason"] == "aborted"
    assert done["content"] == "".join(c["text"] for c in chunks)
    assert done["usage"]["completion_tokens"] < 500
    message = await Message.objects.aget(pk=message_id)
    assert message.state == Message.State.ABORTED
    assert message.content == done["content"]


async def test_it_takes_an_aborted_prompt_off_the_queue(
    owner: Any, serial_pinned_worker: Any
) -> None:
    # One slot: the second prompt waits in the queue while the first is written.
    socket = await open_socket(owner)
    busy = await send_prompt(socket, LONG_PROMPT, model=SECOND_MODEL, max_tokens=500, seed=3)
    await next_of_type(socket, "started", busy["message"])
    waiting = await send_prompt(socket, "Hello?", model=SECOND_MODEL, seed=3)
    assert waiting["queue_position"] == 1
    await socket.send_json_to({"type": "abort", "message": waiting["message"]})
    await socket.send_json_to({"type": "abort", "message": busy["message"]})
    dones: dict[str, dict] = {}
    while len(dones) < 2:
        frame = await socket.receive_json_from(timeout=60)
        if frame["type"] == "done":
            dones[frame["message"]] = frame
    await socket.disconnect()
    done = dones[waiting["message"]]
    assert done["finish_reason"] == "aborted"
    assert done["content"] == ""
    message = await Message.objects.aget(pk=waiting["message"])
    assert message.state == Message.State.ABORTED
    assert message.started_at is None, "the worker must not run an aborted job"


async def test_it_refuses_to_abort_another_users_message(
    owner: Any, outsider: Any, default_model: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    accepted = await send_prompt(socket, "Hi", max_tokens=20, seed=1)
    intruder = await open_socket(outsider)
    await intruder.send_json_to({"type": "abort", "message": accepted["message"]})
    error = await intruder.receive_json_from(timeout=10)
    assert error["type"] == "error"
    assert error["code"] == "not_found"
    done = await next_of_type(socket, "done", accepted["message"])
    assert done["finish_reason"] in ("stop", "length")
    await socket.disconnect()
    await intruder.disconnect()


async def test_it_resumes_an_answer_after_a_disconnect_without_gap_or_repeat(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    accepted = await send_prompt(socket, LONG_PROMPT, max_tokens=200, seed=5)
    message_id = accepted["message"]
    seen = [await next_of_type(socket, "chunk", message_id) for _ in range(2)]
    await socket.disconnect()

    again = await open_socket(owner)
    await again.send_json_to({"type": "subscribe", "message": message_id, "after": 2})
    frames = await frames_until_done(again)
    await again.disconnect()
    rest = [f for f in frames if f["type"] == "chunk"]
    assert [c["seq"] for c in seen + rest] == list(range(1, len(seen) + len(rest) + 1))
    done = frames[-1]
    assert "".join(c["text"] for c in seen + rest) == done["content"]
    message = await Message.objects.aget(pk=message_id)
    assert message.state == Message.State.DONE
    assert message.content == done["content"]


async def test_it_replays_a_finished_answer_to_a_subscriber(
    owner: Any, outsider: Any, default_model: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    accepted = await send_prompt(socket, "Say hello.", max_tokens=30, seed=2)
    done = await next_of_type(socket, "done", accepted["message"])
    await socket.send_json_to({"type": "subscribe", "message": accepted["message"], "after": 0})
    frames = await frames_until_done(socket)
    assert "".join(f["text"] for f in frames if f["type"] == "chunk") == done["content"]
    assert frames[-1] == done
    await socket.disconnect()

    intruder = await open_socket(outsider)
    await intruder.send_json_to({"type": "subscribe", "message": accepted["message"], "after": 0})
    error = await intruder.receive_json_from(timeout=10)
    assert error["code"] == "not_found"
    await intruder.disconnect()


async def test_it_finishes_and_saves_the_answer_when_every_browser_is_gone(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    accepted = await send_prompt(socket, "Write a haiku about the sea.", max_tokens=40, seed=4)
    await socket.disconnect()
    for _ in range(300):
        message = await Message.objects.aget(pk=accepted["message"])
        if message.is_finished:
            break
        await asyncio.sleep(0.1)
    assert message.state == Message.State.DONE
    assert message.content.strip()
    assert message.completion_tokens


async def test_it_regenerates_an_answer_beside_the_old_one(
    owner: Any, outsider: Any, default_model: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    first = await send_prompt(socket, "Name an animal.", seed=1, max_tokens=10)
    await next_of_type(socket, "done", first["message"])
    await socket.send_json_to(
        {
            "type": "regenerate",
            "message": first["message"],
            "options": {"seed": 2, "max_tokens": 10},
            "client_id": "r1",
        }
    )
    again = await socket.receive_json_from(timeout=10)
    assert again["type"] == "accepted" and again["client_id"] == "r1"
    assert again["user_message"] == first["user_message"]
    assert again["message"] != first["message"]
    done = await next_of_type(socket, "done", again["message"])
    await socket.disconnect()
    assert done["finish_reason"] in ("stop", "length")
    versions = Message.objects.filter(parent_id=first["user_message"], role="assistant")
    assert await versions.acount() == 2

    intruder = await open_socket(outsider)
    await intruder.send_json_to({"type": "regenerate", "message": first["message"]})
    error = await intruder.receive_json_from(timeout=10)
    assert error["code"] == "not_found"
    await intruder.disconnect()


async def test_it_edits_a_user_turn_into_a_new_branch(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    first = await send_prompt(socket, "Name a fruit.", seed=1, max_tokens=10)
    await next_of_type(socket, "done", first["message"])
    await socket.send_json_to(
        {
            "type": "prompt",
            "content": "Another?",
            "conversation": first["conversation"],
            "options": {"max_tokens": 5},
        }
    )
    second = await socket.receive_json_from(timeout=10)
    second_done = await next_of_type(socket, "done", second["message"])

    await socket.send_json_to(
        {
            "type": "edit",
            "message": first["user_message"],
            "content": "Name a vegetable.",
            "options": {"seed": 1, "max_tokens": 10},
        }
    )
    edited = await socket.receive_json_from(timeout=10)
    assert edited["type"] == "accepted"
    done = await next_of_type(socket, "done", edited["message"])
    await socket.disconnect()
    new_turn = await Message.objects.aget(pk=edited["user_message"])
    old_turn = await Message.objects.aget(pk=first["user_message"])
    assert new_turn.content == "Name a vegetable."
    assert new_turn.parent_id == old_turn.parent_id  # a sibling: the old branch is kept
    assert await Message.objects.filter(conversation_id=first["conversation"]).acount() == 6
    # The new answer saw only its own branch, not the first exchange and its follow-up.
    assert done["usage"]["prompt_tokens"] < second_done["usage"]["prompt_tokens"]


async def test_it_follows_the_message_a_prompt_names(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    first = await send_prompt(socket, "Hello.", seed=1, max_tokens=5)
    await next_of_type(socket, "done", first["message"])
    await socket.send_json_to(
        {"type": "regenerate", "message": first["message"], "options": {"max_tokens": 5}}
    )
    second = await socket.receive_json_from(timeout=10)
    await next_of_type(socket, "done", second["message"])
    await socket.send_json_to(
        {
            "type": "prompt",
            "content": "Thanks.",
            "conversation": first["conversation"],
            "parent": first["message"],
            "options": {"max_tokens": 5},
        }
    )
    third = await socket.receive_json_from(timeout=10)
    await next_of_type(socket, "done", third["message"])
    await socket.disconnect()
    turn = await Message.objects.aget(pk=third["user_message"])
    assert str(turn.parent_id) == first["message"]


async def test_it_tells_every_open_page_of_the_user_about_a_new_conversation(
    owner: Any, outsider: Any, default_model: Any, inference_worker: Any
) -> None:
    sender, other_page, stranger = (
        await open_socket(owner),
        await open_socket(owner),
        await open_socket(outsider),
    )
    accepted = await send_prompt(sender, "Say hello.", max_tokens=4)
    frames = await collect(other_page, lambda fs: fs and fs[-1]["type"] == "conversation")
    assert frames[-1]["conversation"] == accepted["conversation"]
    assert frames[-1]["title"] == "Say hello."
    await frames_until_done(sender)
    assert await stranger.receive_nothing(timeout=0.5)
    for socket in (sender, other_page, stranger):
        await socket.disconnect()


async def test_it_stops_an_open_socket_of_an_account_disabled_since(owner: Any) -> None:
    socket = await open_socket(owner)
    owner.is_active = False
    await owner.asave(update_fields=["is_active"])
    await socket.send_json_to({"type": "prompt", "content": "hi", "client_id": "x"})
    error = await socket.receive_json_from(timeout=5)
    assert error["code"] == "account_disabled"
    assert (await socket.receive_output(timeout=5))["type"] == "websocket.close"
    assert not await Message.objects.filter(conversation__owner=owner).aexists()


def browser_in(cookie: str) -> Client:
    """The browser whose session the cookie names (a page of it holds the socket)."""
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = cookie
    return client


async def assert_session_ended(socket: WebsocketCommunicator) -> None:
    await socket.send_json_to({"type": "subscribe", "message": str(uuid.uuid4())})
    error = await socket.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["code"] == "session_ended"
    assert "log in again" in error["message"]
    closed = await socket.receive_output(timeout=5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 4401)


async def assert_still_served(socket: WebsocketCommunicator) -> None:
    await socket.send_json_to({"type": "subscribe", "message": str(uuid.uuid4())})
    assert (await socket.receive_json_from(timeout=5))["code"] == "not_found"
    await socket.disconnect()


async def test_it_closes_an_open_socket_whose_session_logged_out(owner: Any, outsider: Any) -> None:
    cookie = await sync_to_async(session_cookie)(owner)
    socket = await open_socket(cookie=cookie)
    other_session, stranger = await open_socket(owner), await open_socket(outsider)
    outsider_cookie = await sync_to_async(session_cookie)(outsider)
    await sync_to_async(browser_in(outsider_cookie).post)("/accounts/logout/")
    await assert_still_served(socket)  # another user's logout is not ours
    socket = await open_socket(cookie=cookie)
    await sync_to_async(browser_in(cookie).post)("/accounts/logout/")
    await assert_session_ended(socket)
    await assert_still_served(other_session)  # the user's other browser stays logged in
    await assert_still_served(stranger)


async def test_it_closes_every_open_socket_of_a_user_whose_password_changed(
    owner: Any, outsider: Any
) -> None:
    cookie = await sync_to_async(session_cookie)(owner)
    socket, other_page = await open_socket(owner), await open_socket(cookie=cookie)
    stranger = await open_socket(outsider)
    changed = await sync_to_async(browser_in(cookie).post)(
        "/accounts/password/",
        {
            "old_password": PASSWORD,
            "new_password1": "new secret 4242",
            "new_password2": "new secret 4242",
        },
    )
    assert changed.status_code == 302
    await assert_session_ended(socket)
    # The page that changed it has a new session (Django cycles its key); this socket had the old.
    await assert_session_ended(other_page)
    await assert_still_served(stranger)


async def test_an_open_socket_loses_staff_priority_when_its_user_is_demoted(
    staff: Any, outsider: Any
) -> None:
    socket, stranger = await open_socket(staff), await open_socket(outsider)
    staff.is_staff = False
    await staff.asave(update_fields=["is_staff"])
    await socket.send_json_to({"type": "prompt", "content": "hi", "options": {"priority": "high"}})
    error = await socket.receive_json_from(timeout=10)
    assert (error["code"], error["key"]) == ("invalid_options", "priority")
    assert "(normal)" in error["message"]
    await stranger.send_json_to(
        {"type": "prompt", "content": "hi", "options": {"priority": "high"}}
    )
    assert (await stranger.receive_json_from(timeout=10))["key"] == "priority"
    for each in (socket, stranger):
        await each.disconnect()
    assert await Message.objects.acount() == 0


def slow_response_format() -> dict[str, Any]:
    """A JSON schema that llama.cpp's converter takes about a second to turn into a grammar:
    900 optional properties (the time grows with their square; 1,000 pass our size limit)."""
    properties = {f"p{i}": {"type": "string"} for i in range(900)}
    schema = {"type": "object", "properties": properties, "required": []}
    return {"type": "json_schema", "json_schema": {"schema": schema}}


async def test_it_checks_options_off_the_event_loop(owner: Any, default_model: Any) -> None:
    busy, other = await open_socket(owner), await open_socket(owner)
    # Refused after the slow conversion (temperature comes second), so nothing is queued.
    options = {"response_format": slow_response_format(), "temperature": 9}
    await busy.send_json_to({"type": "prompt", "content": "hi", "options": options})
    await asyncio.sleep(0.1)  # the busy socket is converting now
    await other.send_json_to({"type": "ping"})
    assert await other.receive_json_from(timeout=30) == {"type": "pong"}
    # On the event loop, the conversion would have held the ping until it was done, and the
    # refusal, sent as it ends, would be there before the pong: the order tells, not a clock.
    assert await busy.receive_nothing(timeout=0.05), "the ping waited for the conversion"
    refused = await busy.receive_json_from(timeout=60)
    assert refused["code"] == "invalid_options" and refused["key"] == "temperature"
    await busy.disconnect()
    await other.disconnect()
    assert await Message.objects.acount() == 0
