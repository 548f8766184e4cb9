"""Titles written by the model (chat/titles.py): asked for after a conversation's first answer,
behind every answer waiting, never over a title the user chose, and not at all with the switch
off. The stack tests run a real worker (pinned to the second model, one slot) and the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client, override_settings
from rq.job import Job, JobStatus

from chat.models import Conversation, Message
from chat.submission import TITLE_LENGTH, _title_from
from chat.titles import title_clean, title_job_id, title_wanted, title_write
from tests.chat.socket_client import collect, next_of_type, open_socket
from tests.conftest import SECOND_MODEL, start_worker
from tests.processes import wait_for
from usage.models import DailyUsage
from wizweb.channels_sender import ChannelSender
from wizweb.redis_server import redis_connection

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel_layer_closed"),
]

MOON = "What is the Moon made of, and how did it form? Tell me in two sentences."
TIDES = "Why does the sea have two high tides a day? Answer briefly."
# Long enough to hold the worker's one slot while the test looks at the queue, and stopped then.
ESSAY = "Write a very long essay about the history of rivers, with many details."


@pytest.mark.parametrize(
    ("written", "title"),
    [
        ("Moon Formation and Composition", "Moon Formation and Composition"),
        ('"Moon Formation and Composition."', "Moon Formation and Composition"),
        ("**Title:** The Moon's Origins!\nIt formed from a collision.", "The Moon's Origins"),
        ("\n\nTitle - Tides, Explained", "Tides, Explained"),
        ("“How the Moon Formed”", "How the Moon Formed"),
        ("One two three four five six seven eight nine", "One two three four five six seven eight"),
        ("Title: Why the Sea Has Two High Tides a Day", "Why the Sea Has Two High Tides"),
        ('Title: "The Moon\'s Composition: A Tale of Two Moons"', "The Moon's Composition"),
        ("Python: Reading CSV Files", "Python: Reading CSV Files"),
        ("Title:\n\nMoon Facts", "Moon Facts"),
        ("# Rivers", "Rivers"),
        ("Supercalifragilistic" * 4 + " word", ("Supercalifragilistic" * 4)[:TITLE_LENGTH]),
        ('"..."', ""),
        ("", ""),
    ],
)
def test_it_cleans_what_the_model_wrote(written: str, title: str) -> None:
    assert title_clean(written) == title


def answered_before(owner: Any, title: str = "Answered before") -> Conversation:
    """A conversation with one answer done already: its next answers ask for no title."""
    conversation = Conversation.objects.create(owner=owner, title=title)
    question = Message.objects.create(conversation=conversation, role="user", content="Hi")
    Message.objects.create(
        conversation=conversation, parent=question, role="assistant", content="Hello!"
    )
    return conversation


def first_answer(owner: Any, **conversation: Any) -> Message:
    """A conversation whose first answer has just been saved (as a worker leaves it)."""
    started = Conversation.objects.create(
        owner=owner, title="What is the Moon made of", **conversation
    )
    question = Message.objects.create(conversation=started, role="user", content=MOON)
    return Message.objects.create(
        conversation=started,
        parent=question,
        role="assistant",
        content="Rock and dust, from a collision long ago.",
    )


@override_settings(WIZ_MODEL_TITLES=True)  # off for the tests' workers (tests/bootstrap.py)
def test_only_a_conversations_first_answer_asks_for_a_title(owner: Any) -> None:
    answer = first_answer(owner)
    assert title_wanted(answer)
    with override_settings(WIZ_MODEL_TITLES=False):
        assert not title_wanted(answer)
    # A second answer done (a regenerated first one, a follow-up) asks nothing more.
    Message.objects.create(
        conversation=answer.conversation, parent=answer.parent, role="assistant", content="Rock."
    )
    assert not title_wanted(answer)
    assert not title_wanted(first_answer(owner, title_by_user=True))
    assert not title_wanted(first_answer(owner, in_history=False))
    stopped = first_answer(owner)
    Message.objects.filter(pk=stopped.pk).update(state=Message.State.ABORTED)
    stopped.refresh_from_db()
    assert not title_wanted(stopped)


def test_a_title_job_whose_model_is_not_loaded_keeps_the_first_words(
    owner: Any, default_model: Any
) -> None:
    # This process holds no model: a background job must not load one, nor say anything.
    answer = first_answer(owner)
    Message.objects.filter(pk=answer.pk).update(model=default_model)
    assert title_write(conversation_id=answer.conversation_id, sender=ChannelSender()) == ""
    assert Conversation.objects.get(pk=answer.conversation_id).title == "What is the Moon made of"


async def ask(socket: Any, content: str, *, conversation: Any = None, **options: Any) -> dict:
    """Send a prompt to the second model (the titling worker's) and return its `accepted`."""
    options = {"model": SECOND_MODEL, "seed": 3, **options}
    await socket.send_json_to(
        {
            "type": "prompt",
            "content": content,
            "conversation": str(conversation.pk) if conversation else None,
            "options": options,
        }
    )
    frames = await collect(socket, lambda fs: fs and fs[-1]["type"] in ("accepted", "error"))
    assert frames[-1]["type"] == "accepted", frames[-1]
    return frames[-1]


def titles_of(frames: list[dict], conversation: str) -> list[str]:
    """The titles `conversation` frames gave this conversation, in order."""
    return [
        f["title"]
        for f in frames
        if f["type"] == "conversation" and f["conversation"] == conversation
    ]


def title_job(conversation: str) -> Job:
    return Job.fetch(title_job_id(conversation), connection=redis_connection())


async def state_of(accepted: dict) -> str:
    return (await Message.objects.aget(pk=accepted["message"])).state


async def test_it_titles_a_conversation_after_its_first_answer(
    owner: Any, titling_worker: Any
) -> None:
    socket = await open_socket(owner)
    first = await ask(socket, MOON, max_tokens=40, temperature=0)
    started = first["conversation"]
    frames = await collect(socket, lambda fs: len(titles_of(fs, started)) >= 2, timeout=120)
    first_words, title = titles_of(frames, started)
    assert first_words == _title_from(MOON)
    done = next(i for i, f in enumerate(frames) if f["type"] == "done")
    titled = next(
        i for i, f in enumerate(frames) if f["type"] == "conversation" and f["title"] == title
    )
    assert done < titled, "the answer never waits for its title"
    assert title and title != first_words
    assert title == title_clean(title) and len(title.split()) <= 8
    saved = await Conversation.objects.aget(pk=started)
    assert (saved.title, saved.title_by_user) == (title, False)
    # The title is nobody's answer: the user's usage holds the answer alone.
    answer = await Message.objects.aget(pk=first["message"])
    usage = [u async for u in DailyUsage.objects.filter(user=owner)]
    assert [(u.answers, u.prompt_tokens, u.completion_tokens) for u in usage] == [
        (1, answer.prompt_tokens, answer.completion_tokens)
    ]
    job = await sync_to_async(title_job)(started)
    # A second answer asks for no title: the job that wrote it is not queued again.
    await sync_to_async(wait_for)(
        lambda: title_job(started).get_status() == JobStatus.FINISHED, timeout=30, what="the job"
    )
    second = await ask(socket, "Tell me more.", conversation=saved, max_tokens=16)
    await next_of_type(socket, "done", second["message"])
    again = await sync_to_async(title_job)(started)
    assert again.enqueued_at == job.enqueued_at
    assert again.get_status() == JobStatus.FINISHED
    assert (await Conversation.objects.aget(pk=started)).title == title
    await socket.disconnect()


async def test_a_title_waits_behind_every_answer_queued_before_it(
    owner: Any, titling_worker: Any
) -> None:
    socket = await open_socket(owner)
    busy, other, later = [await sync_to_async(answered_before)(owner) for _ in range(3)]
    blocker = await ask(socket, ESSAY, conversation=busy, max_tokens=400)
    # Its first text, not `started`: a frame sent before the socket joined is lost, a chunk not.
    await next_of_type(socket, "chunk", blocker["message"])
    first = await ask(socket, MOON, max_tokens=16)
    normal = await ask(socket, "Say hello.", conversation=other, max_tokens=8)
    low = await ask(socket, ESSAY, conversation=later, max_tokens=400, priority="low")
    assert await state_of(blocker) == "running", "all three must queue behind the only slot"
    await socket.send_json_to({"type": "abort", "message": blocker["message"]})
    await next_of_type(socket, "started", low["message"])
    # The first answer and the normal one ran; the title, queued when the first was done,
    # still waits behind the low answer that was queued before it.
    before = await state_of(low)
    status = await sync_to_async(lambda: title_job(first["conversation"]).get_status())()
    after = await state_of(low)
    assert before == after == "running", "the low answer must hold the slot meanwhile"
    assert status == JobStatus.QUEUED
    assert await state_of(first) == await state_of(normal) == "done"
    started = await Conversation.objects.aget(pk=first["conversation"])
    assert started.title.startswith("What is the Moon made of")
    await socket.send_json_to({"type": "abort", "message": low["message"]})
    frames = await collect(
        socket, lambda fs: len(titles_of(fs, first["conversation"])) >= 1, timeout=120
    )
    (title,) = titles_of(frames, first["conversation"])
    assert title != started.title
    await socket.disconnect()


def rename(owner: Any, conversation: str, title: str) -> None:
    """As the sidebar renames: PATCH the conversation."""
    client = Client()
    client.force_login(owner)
    response = client.patch(
        f"/api/conversations/{conversation}/",
        json.dumps({"title": title}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content


async def test_a_conversation_the_user_renamed_keeps_its_name(
    owner: Any, titling_worker: Any
) -> None:
    socket = await open_socket(owner)
    busy, later = [await sync_to_async(answered_before)(owner) for _ in range(2)]
    blocker = await ask(socket, ESSAY, conversation=busy, max_tokens=400)
    # Its first text, not `started`: a frame sent before the socket joined is lost, a chunk not.
    await next_of_type(socket, "chunk", blocker["message"])
    early = await ask(socket, MOON, max_tokens=16)
    # Renamed before its first answer is done: no title is asked for.
    await sync_to_async(rename)(owner, early["conversation"], "Moon notes")
    waiting = await ask(socket, TIDES, max_tokens=16)
    low = await ask(socket, ESSAY, conversation=later, max_tokens=400, priority="low")
    assert await state_of(blocker) == "running", "all three must queue behind the only slot"
    await socket.send_json_to({"type": "abort", "message": blocker["message"]})
    frames = await collect(
        socket,
        lambda fs: fs and fs[-1]["type"] == "started" and fs[-1]["message"] == low["message"],
    )
    assert await state_of(early) == await state_of(waiting) == "done"
    assert not await sync_to_async(Job.exists)(
        title_job_id(early["conversation"]), connection=redis_connection()
    )
    # Renamed while its title waits in the queue: the title job finds it renamed.
    status = await sync_to_async(lambda: title_job(waiting["conversation"]).get_status())()
    assert status == JobStatus.QUEUED
    await sync_to_async(rename)(owner, waiting["conversation"], "Tide notes")
    await socket.send_json_to({"type": "abort", "message": low["message"]})
    await sync_to_async(wait_for)(
        lambda: title_job(waiting["conversation"]).get_status() == JobStatus.FINISHED,
        timeout=120,
        what="the title job to run",
    )
    frames += await collect(socket, lambda fs: any(f["type"] == "done" for f in fs))
    assert (await Conversation.objects.aget(pk=early["conversation"])).title == "Moon notes"
    assert (await Conversation.objects.aget(pk=waiting["conversation"])).title == "Tide notes"
    assert set(titles_of(frames, waiting["conversation"])) <= {"Tide notes", _title_from(TIDES)}
    await socket.disconnect()


@pytest.mark.stack
async def test_with_the_switch_off_no_title_is_asked_for(
    owner: Any, second_model: Any, log_dir: Path
) -> None:
    worker = await sync_to_async(start_worker)(
        "titles-off", log_dir, model=SECOND_MODEL, WIZ_MODEL_TITLES="false"
    )
    try:
        socket = await open_socket(owner)
        first = await ask(socket, MOON, max_tokens=16)
        await next_of_type(socket, "done", first["message"])
        await socket.disconnect()
    finally:
        await sync_to_async(worker.stop)()
    # A title job is queued before the answer's `done` is sent: none was.
    assert not await sync_to_async(Job.exists)(
        title_job_id(first["conversation"]), connection=redis_connection()
    )
    started = await Conversation.objects.aget(pk=first["conversation"])
    assert started.title == _title_from(MOON)
