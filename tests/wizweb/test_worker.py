"""Inference workers as a user meets them: priorities, routing, a killed worker (restarted under
its name or not), a conversation deleted mid-answer, a database locked mid-answer, rq's stop."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from asgiref.sync import sync_to_async
from django.db import connection as db_connection
from django.test import Client
from rq.command import send_stop_job_command
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from chat.models import Conversation, Message
from chat.queue import WORKER_LOST_ERROR
from chat.streams import abort_key, chunk_log_key
from inference.presence import worker_state_get, worker_states
from tests.chat.socket_client import collect, done_for, frames_until_done, open_socket, send_prompt
from tests.chat.test_consumer import LONG_PROMPT
from tests.conftest import SECOND_MODEL, start_worker
from tests.processes import Child, wait_for
from wizweb.apikeys import apikey_create
from wizweb.redis_server import redis_connection

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel_layer_closed"),
]


async def test_it_serves_high_before_normal_before_low(
    staff: Any, serial_pinned_worker: Any, inference_worker: Any
) -> None:
    socket = await open_socket(staff)
    blocker = await send_prompt(socket, LONG_PROMPT, model=SECOND_MODEL, max_tokens=400, seed=1)
    await collect(socket, lambda fs: any(f["type"] == "started" for f in fs))
    low = await send_prompt(socket, "One", model=SECOND_MODEL, max_tokens=4, priority="low")
    normal = await send_prompt(socket, "Two", model=SECOND_MODEL, max_tokens=4, priority="normal")
    high = await send_prompt(socket, "Three", model=SECOND_MODEL, max_tokens=4, priority="high")
    assert (low["queue_position"], normal["queue_position"], high["queue_position"]) == (1, 1, 1)
    await socket.send_json_to({"type": "abort", "message": blocker["message"]})
    ids = [low["message"], normal["message"], high["message"]]
    frames = await collect(socket, lambda fs: all(done_for(fs, i) for i in ids))
    await socket.disconnect()

    started = [f["message"] for f in frames if f["type"] == "started"]
    assert started == [high["message"], normal["message"], low["message"]]
    assert {f["worker"] for f in frames if f["type"] == "started"} == {"pinned-second"}
    # The low one was told its place as the others came in ahead of it and then left.
    positions = [f["position"] for f in frames if f["type"] == "queued" and f["message"] == ids[0]]
    assert 3 in positions
    assert positions[-1] == 1


async def test_it_routes_each_model_to_the_worker_that_holds_it(
    owner: Any, pinned_worker: Any, default_model: Any, log_dir: Any
) -> None:
    default_worker = start_worker("pinned-default", log_dir, model=default_model.name)
    try:
        socket = await open_socket(owner)
        first = await send_prompt(socket, "Hi", model=SECOND_MODEL, max_tokens=8)
        second = await send_prompt(socket, "Hi", model=default_model.name, max_tokens=8)
        frames = await collect(
            socket, lambda fs: done_for(fs, first["message"]) and done_for(fs, second["message"])
        )
        await socket.disconnect()
    finally:
        default_worker.stop()
    workers = {f["message"]: f["worker"] for f in frames if f["type"] == "started"}
    assert workers == {first["message"]: "pinned-second", second["message"]: "pinned-default"}
    states = {s.name: s for s in worker_states(redis_connection())}
    assert states["pinned-second"].models == [SECOND_MODEL]


async def test_it_fails_the_answer_of_a_killed_worker_and_keeps_its_text(
    owner: Any, pinned_worker: Any, inference_worker: Any, record_property: Any
) -> None:
    socket = await open_socket(owner)
    accepted = await send_prompt(socket, LONG_PROMPT, model=SECOND_MODEL, max_tokens=600, seed=2)
    message_id = accepted["message"]
    seen = await collect(socket, lambda fs: sum(f["type"] == "chunk" for f in fs) >= 2)
    pinned_worker.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    frames = await collect(socket, lambda fs: done_for(fs, message_id), timeout=30)
    noticed_after = time.monotonic() - killed_at
    await socket.disconnect()

    done = done_for(frames, message_id)
    assert done is not None
    assert done["finish_reason"] == "error"
    assert "worker" in done["error"] and "stopped" in done["error"]
    received = "".join(f["text"] for f in seen + frames if f["type"] == "chunk")
    assert received and done["content"].startswith(received)
    record_property("failed_after_sigkill_no_restart_s", round(noticed_after, 1))
    assert noticed_after < 15
    message = await Message.objects.aget(pk=message_id)
    assert message.state == Message.State.FAILED
    assert message.content == done["content"]
    job = Job.fetch(message_id, connection=redis_connection())
    assert job.get_status() == JobStatus.FAILED
    assert message_id in FailedJobRegistry(job.origin, connection=redis_connection())
    assert (
        message_id
        not in StartedJobRegistry(job.origin, connection=redis_connection()).get_job_ids()
    )


async def test_it_aborts_on_rqs_own_stop_command(
    owner: Any, pinned_worker: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    accepted = await send_prompt(socket, LONG_PROMPT, model=SECOND_MODEL, max_tokens=600, seed=2)
    await collect(socket, lambda fs: any(f["type"] == "chunk" for f in fs))
    send_stop_job_command(redis_connection(), accepted["message"])
    frames = await frames_until_done(socket)
    await socket.disconnect()
    assert frames[-1]["finish_reason"] == "aborted"
    assert frames[-1]["usage"]["completion_tokens"] < 600


async def test_it_keeps_beating_while_it_generates(
    owner: Any, pinned_worker: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    accepted = await send_prompt(socket, LONG_PROMPT, model=SECOND_MODEL, max_tokens=600, seed=2)
    await collect(socket, lambda fs: any(f["type"] == "chunk" for f in fs))

    def beating_while_busy() -> bool:
        state = next(s for s in worker_states(redis_connection()) if s.name == "pinned-second")
        return state.busy and state.current_message == accepted["message"]

    wait_for(beating_while_busy, timeout=5, what="a busy presence record")
    first = next(s for s in worker_states(redis_connection()) if s.name == "pinned-second")
    time.sleep(2.2)
    later = next(s for s in worker_states(redis_connection()) if s.name == "pinned-second")
    assert later.heartbeat > first.heartbeat
    assert later.rss_bytes > 50_000_000
    await socket.send_json_to({"type": "abort", "message": accepted["message"]})
    await frames_until_done(socket)
    await socket.disconnect()


def restart_under_the_same_name(killed: Child, log_dir: Path) -> Child:
    """What supervisord does with a crashed worker: start it again at once, under its name."""
    return start_worker(killed.name, log_dir, model=SECOND_MODEL)


@pytest.mark.parametrize("death", [signal.SIGKILL, signal.SIGSEGV], ids=["killed", "segfault"])
async def test_it_fails_at_once_the_answer_of_a_dead_worker_restarted_under_its_name(
    owner: Any, pinned_worker: Child, log_dir: Path, death: int, record_property: Any
) -> None:
    socket = await open_socket(owner)
    accepted = await send_prompt(socket, LONG_PROMPT, model=SECOND_MODEL, max_tokens=600, seed=2)
    message_id = accepted["message"]
    seen = await collect(socket, lambda fs: sum(f["type"] == "chunk" for f in fs) >= 2)
    killed_run = (await Message.objects.aget(pk=message_id)).worker_run
    writer = worker_state_get(redis_connection(), pinned_worker.name)
    assert writer is not None and (writer.pid, writer.run) == (pinned_worker.pid, killed_run)
    # SIGKILL is what the kernel's OOM killer sends; SIGSEGV is how a crash in llama.cpp ends.
    pinned_worker.process.send_signal(death)
    killed_at = time.monotonic()
    restarted = await sync_to_async(restart_under_the_same_name)(pinned_worker, log_dir)
    try:
        frames = await collect(socket, lambda fs: done_for(fs, message_id), timeout=30)
        noticed_after = time.monotonic() - killed_at

        done = done_for(frames, message_id)
        assert done is not None and done["finish_reason"] == "error"
        assert done["error"] == WORKER_LOST_ERROR
        received = "".join(f["text"] for f in seen + frames if f["type"] == "chunk")
        assert received and done["content"].startswith(received)
        record_property("failed_after_death_with_restart_s", round(noticed_after, 1))
        # Measured 1.5 to 2.3 s; the time includes starting the new worker process (a model
        # load), which a box busy with other work can stretch past 15 s, so the bound is loose.
        assert noticed_after < 45
        message = await Message.objects.aget(pk=message_id)
        assert message.state == Message.State.FAILED
        assert message.content == done["content"]
        assert redis_connection().ttl(chunk_log_key(message_id)) > 0

        # The restarted worker takes the next prompt, as a new run of the same name.
        second = await send_prompt(socket, "Hi", model=SECOND_MODEL, max_tokens=4)
        frames = await collect(socket, lambda fs: done_for(fs, second["message"]))
        assert done_for(frames, second["message"])["finish_reason"] in ("stop", "length")
        started = next(f for f in frames if f["type"] == "started")
        assert started["worker"] == pinned_worker.name
        served = await Message.objects.aget(pk=second["message"])
        assert served.worker_run not in ("", killed_run)
    finally:
        await socket.disconnect()
        restarted.stop()


async def test_a_waiting_api_call_gets_an_error_when_its_worker_is_killed(
    owner: Any, web_server: str, pinned_worker: Child, log_dir: Path
) -> None:
    secret = (await sync_to_async(apikey_create)(user=owner, name="t", keep_history=True)).secret
    client = openai.OpenAI(base_url=f"{web_server}/v1", api_key=secret, max_retries=0, timeout=90)
    call = asyncio.create_task(
        asyncio.to_thread(
            client.chat.completions.create,
            model=SECOND_MODEL,
            messages=[{"role": "user", "content": LONG_PROMPT}],
            max_tokens=600,
            seed=2,
        )
    )

    def streaming() -> Message | None:
        message = Message.objects.filter(role="assistant", state="running").first()
        return message if message and redis_connection().llen(chunk_log_key(message.id)) else None

    message = await sync_to_async(wait_for)(streaming, timeout=60, what="the answer to stream")
    pinned_worker.process.send_signal(signal.SIGKILL)
    restarted = await sync_to_async(restart_under_the_same_name)(pinned_worker, log_dir)
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            await asyncio.wait_for(call, timeout=30)
    finally:
        restarted.stop()
        client.close()
    assert caught.value.status_code == 500
    assert caught.value.body["message"] == WORKER_LOST_ERROR
    await message.arefresh_from_db()
    assert message.state == Message.State.FAILED


async def test_it_ends_quietly_an_answer_whose_conversation_is_deleted(
    owner: Any, pinned_worker: Child
) -> None:
    socket = await open_socket(owner)
    accepted = await send_prompt(socket, LONG_PROMPT, model=SECOND_MODEL, max_tokens=600, seed=2)
    message_id = accepted["message"]
    await collect(socket, lambda fs: sum(f["type"] == "chunk" for f in fs) >= 2)

    key = (await sync_to_async(apikey_create)(user=owner, name="t")).secret
    url = f"/api/conversations/{accepted['conversation']}/"
    response = await sync_to_async(Client().delete)(url, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 204
    frames = await collect(socket, lambda fs: done_for(fs, message_id), timeout=30)
    assert done_for(frames, message_id)["finish_reason"] == "aborted"
    assert not await Message.objects.filter(pk=message_id).aexists()

    connection = redis_connection()
    assert connection.ttl(chunk_log_key(message_id)) > 0
    assert not connection.exists(abort_key(message_id))
    job = Job.fetch(message_id, connection=connection)
    wait_for(lambda: job.get_status() == JobStatus.FINISHED, timeout=10, what="the job to end")

    # The worker serves on, and said nothing alarming about it.
    second = await send_prompt(socket, "Hi", model=SECOND_MODEL, max_tokens=4)
    frames = await collect(socket, lambda fs: done_for(fs, second["message"]))
    await socket.disconnect()
    assert done_for(frames, second["message"])["finish_reason"] in ("stop", "length")
    assert pinned_worker.process.poll() is None
    assert "Traceback" not in pinned_worker.output()
    await Conversation.objects.filter(owner=owner).adelete()


@pytest.fixture
def impatient_worker(second_model: Any, log_dir: Path) -> Iterator[Child]:
    """A worker pinned to the second model whose SQLite writes wait 2 s for a lock, not 20."""
    child = start_worker("pinned-second", log_dir, model=SECOND_MODEL, WIZ_SQLITE_TIMEOUT="2")
    yield child
    child.stop()


async def test_an_answer_outlasts_a_database_locked_past_its_timeout(
    owner: Any, impatient_worker: Child, record_property: Any
) -> None:
    if db_connection.vendor != "sqlite":
        pytest.skip("Only SQLite locks the whole database for one writer.")
    pinned_worker = impatient_worker
    socket = await open_socket(owner)
    accepted = await send_prompt(socket, LONG_PROMPT, model=SECOND_MODEL, max_tokens=200, seed=2)
    message_id = accepted["message"]
    seen = await collect(socket, lambda fs: any(f["type"] == "started" for f in fs))

    def tried_to_save() -> bool:
        """The worker found the database locked at the end of the answer (and says it will try
        again), or gave the answer up."""
        state = worker_state_get(redis_connection(), pinned_worker.name)
        gave_up = state is not None and state.current_message != message_id
        return gave_up or "Could not save the end of message" in pinned_worker.output()

    # Another process writes for longer than the worker's busy timeout (WIZ_SQLITE_TIMEOUT).
    lock = sqlite3.connect(db_connection.settings_dict["NAME"], isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        await sync_to_async(wait_for)(tried_to_save, timeout=120, what="an attempt to save")
    finally:
        lock.close()
    released = time.monotonic()
    frames = await collect(socket, lambda fs: done_for(fs, message_id), timeout=60)
    record_property("done_after_lock_released_s", round(time.monotonic() - released, 1))
    await socket.disconnect()

    done = done_for(frames, message_id)
    assert done is not None and done["finish_reason"] in ("stop", "length"), done
    received = "".join(f["text"] for f in seen + frames if f["type"] == "chunk")
    message = await Message.objects.aget(pk=message_id)
    assert message.state == Message.State.DONE
    assert message.content == done["content"] == received
