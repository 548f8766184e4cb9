"""README's "Add a worker machine", run as another host would run it: an inference worker with a
data dir and a models dir of its own, reaching the server's Redis over TCP and its PostgreSQL,
pinned to a model whose file only it holds (registered there with `models scan --add-only`). It
answers for that model, `/healthz` and the model-admin page list it, and stopping it fails over
cleanly: warm, its answer ends and the waiting one is written when it is back; killed, its answer
fails with its text and another machine pinned to the model takes the waiting one; a prompt sent
while it is down waits for it, or fails with a sentence on an unpinned worker without the file.

The server is daphne and a download worker on the test database and on a Redis of this module's
own that listens on a TCP port of 127.0.0.1 (the session's private Redis is a unix socket, which
no other machine could reach)."""

from __future__ import annotations

import json
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest
import redis
from django.conf import settings
from rq import Queue

from chat.models import Message
from chat.queue import WORKER_LOST_ERROR
from chat.streams import chunk_log_key
from inference.presence import generation_queue_name, worker_state_get
from models_admin.models import LocalModel
from tests.bootstrap import link_or_copy
from tests.conftest import session_cookie
from tests.processes import (
    MANAGE,
    Child,
    child_env,
    daphne_command,
    free_port,
    http_status,
    inference_worker_command,
    wait_for,
)
from wizweb.apikeys import apikey_create
from wizweb.redis_server import PrivateRedis

pytestmark = [
    pytest.mark.stack,  # every test runs daphne and workers, as the two machines do
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3",
        reason="A second machine needs a database both machines reach: run with "
        "DATABASE_URL=postgres://... (SQLite is a file on the server).",
    ),
]

REMOTE_MODEL = "SmolLM2 on the second machine"
ESSAY = "Write a very long essay about the history of rivers, with many details."
# The box running the tests is shared and loaded: every wait is for a condition, and generous.
PATIENCE = 120


@dataclass
class Server:
    """The server as the second machine sees it: daphne's URL and the Redis both use."""

    url: str
    redis_url: str
    redis: redis.Redis


@pytest.fixture(autouse=True)
def session_worker_paused() -> Iterator[None]:
    """The session's inference worker (started by earlier tests) shares this test's database but
    not its Redis, so its reaper would take the second machine's answers for those of a dead
    worker and fail them; in an install every worker shares one Redis. It is paused for the
    test (SIGSTOP) and goes on afterwards."""
    paused = [
        child
        for child in psutil.Process().children()
        if "test-inference" in child.cmdline() and "inference_worker" in " ".join(child.cmdline())
    ]
    for child in paused:
        child.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for child in paused:
            child.send_signal(signal.SIGCONT)


@pytest.fixture
def tcp_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis", port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def server(tcp_redis: PrivateRedis, log_dir: Path, default_model: LocalModel) -> Iterator[Server]:
    """What `serve` runs on the server, pointed at the shared Redis: daphne and a download
    worker (no inference worker of its own: the model asked for is not in its models dir)."""
    env = child_env(REDIS_URL=tcp_redis.url)
    port = free_port()
    web = Child("second-machine-daphne", daphne_command(port), env, log_dir)
    downloads = Child(
        "second-machine-downloads",
        [sys.executable, MANAGE, "rqworker", settings.DOWNLOAD_QUEUE, "--name", "server-downloads"],
        env,
        log_dir,
    )
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        if web.process.poll() is not None:
            raise RuntimeError(f"daphne exited:\n{web.output()}")
        return http_status(f"{url}/healthz") is not None

    connection = redis.Redis.from_url(tcp_redis.url)
    try:
        wait_for(answering, timeout=PATIENCE, what="daphne to answer")
        yield Server(url=url, redis_url=tcp_redis.url, redis=connection)
    finally:
        web.stop()
        downloads.stop()
        connection.close()


@dataclass
class Machine:
    """The second machine's own dirs: nothing of the server's but the two URLs."""

    data_dir: Path
    models_dir: Path


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    data_dir = tmp_path / "second-machine"
    models_dir = data_dir / "models"
    models_dir.mkdir(parents=True)
    return Machine(data_dir=data_dir, models_dir=models_dir)


def machine_env(machine: Machine, server: Server, **extra: str) -> dict[str, str]:
    """The second machine's environment: its own dirs, the server's Redis (TCP) and database."""
    return child_env(
        WIZ_DATA_DIR=str(machine.data_dir),
        WIZ_MODELS_DIR=str(machine.models_dir),
        REDIS_URL=server.redis_url,
        **extra,
    )


@pytest.fixture
def remote_model(
    machine: Machine, server: Server, default_model: LocalModel, log_dir: Path
) -> LocalModel:
    """The default weights under a file name that is only in the second machine's models dir,
    registered as its operator would: `models scan --add-only` there, then a name of its own
    (as given in the admin)."""
    link_or_copy(default_model.path, machine.models_dir / "remote-copy.gguf")
    scan = Child(
        "second-machine-scan",
        [sys.executable, MANAGE, "models", "scan", "--add-only"],
        machine_env(machine, server),
        log_dir,
    )
    scan.process.wait(timeout=PATIENCE)
    scan.stop()
    assert scan.process.returncode == 0, scan.output()
    assert "Registered remote-copy.gguf" in scan.output()
    LocalModel.objects.filter(file="remote-copy.gguf").update(name=REMOTE_MODEL)
    model = LocalModel.objects.get(file="remote-copy.gguf")
    assert model.state == LocalModel.State.READY and not model.is_default
    assert not model.path.exists(), "the server's models dir must not hold the remote model"
    # The server's models, whose files are not on the second machine, are left alone.
    default_model.refresh_from_db()
    assert default_model.state == LocalModel.State.READY
    return model


def worker_start(name: str, machine: Machine, server: Server, log_dir: Path) -> Child:
    """`manage.py inference_worker --model NAME` as README runs it on the worker machine: its
    own WIZ_DATA_DIR and WIZ_MODELS_DIR, the server's Redis (TCP) and database; one slot, so
    a second prompt waits in the model's queue."""
    env = machine_env(machine, server, WIZ_PARALLEL="1", WIZ_THREADS="1")
    child = Child(name, inference_worker_command(name=name, model=REMOTE_MODEL), env, log_dir)

    def registered() -> bool:
        if child.process.poll() is not None:
            raise RuntimeError(f"The worker exited:\n{child.output()}")
        state = worker_state_get(server.redis, name)
        return state is not None and state.pid == child.pid and state.models == [REMOTE_MODEL]

    try:
        wait_for(registered, timeout=PATIENCE, what=f"the worker {name} to register")
    except BaseException:
        child.stop()
        raise
    return child


@pytest.fixture
def second_worker(
    machine: Machine, server: Server, remote_model: LocalModel, log_dir: Path
) -> Iterator[Child]:
    child = worker_start("second-machine", machine, server, log_dir)
    yield child
    child.stop()


@pytest.fixture
def api(server: Server, owner: Any) -> Iterator[openai.OpenAI]:
    secret = apikey_create(user=owner, name="t", keep_history=True).secret
    with openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=secret, max_retries=0, timeout=2 * PATIENCE
    ) as client:
        yield client


def ask(api: openai.OpenAI, prompt: str, max_tokens: int) -> Any:
    return api.chat.completions.create(
        model=REMOTE_MODEL,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        seed=2,
        temperature=0,
    )


def answers() -> list[Message]:
    return list(Message.objects.filter(role=Message.Role.ASSISTANT).order_by("created_at"))


def chunk_text(server: Server, message: Message) -> str:
    return b"".join(server.redis.lrange(chunk_log_key(message.id), 0, -1)).decode()


def test_it_answers_for_the_model_only_it_holds(
    server: Server, second_worker: Child, remote_model: LocalModel, api: openai.OpenAI, staff: Any
) -> None:
    completion = ask(api, "Name a colour.", max_tokens=8)
    assert completion.model == REMOTE_MODEL
    assert completion.choices[0].message.content
    [message] = answers()
    assert message.state == Message.State.DONE
    assert message.worker == "second-machine"
    state = worker_state_get(server.redis, "second-machine")
    assert state is not None and message.worker_run == state.run
    assert state.pinned_model == remote_model.pk

    staff_key = apikey_create(user=staff, name="t").secret

    def healthy() -> Any:
        body = http_json(f"{server.url}/healthz", {"Authorization": f"Bearer {staff_key}"})
        return body if body["ok"] else None

    # ok once the download worker has registered too.
    health = wait_for(healthy, timeout=PATIENCE, what="/healthz to be ok")
    listed = {w["name"]: w for w in health["workers"]["inference"]}
    assert listed["second-machine"]["models"] == [REMOTE_MODEL]

    cookie = f"{settings.SESSION_COOKIE_NAME}={session_cookie(staff)}"
    page = http_text(f"{server.url}/models/", {"Cookie": cookie})
    assert '<tr data-worker="second-machine">' in page
    assert 'data-holders="second-machine"' in page


def answer_running_with_text(server: Server) -> Message:
    def running() -> Message | None:
        found = answers()
        if found and found[0].state == Message.State.RUNNING and chunk_text(server, found[0]):
            return found[0]
        return None

    return wait_for(running, timeout=PATIENCE, what="the first answer to stream")


def answer_waiting_in_the_models_queue(server: Server, model: LocalModel) -> Message:
    queue = Queue(generation_queue_name("normal", model.pk), connection=server.redis)

    def waiting() -> Message | None:
        found = answers()
        if len(found) == 2 and str(found[1].id) in queue.get_job_ids():
            return found[1]
        return None

    waiting_one = wait_for(waiting, timeout=PATIENCE, what="the second answer to be queued")
    assert waiting_one.state == Message.State.QUEUED
    return waiting_one


def test_a_stopped_worker_ends_its_answer_and_the_waiting_one_is_served_on_its_return(
    server: Server,
    machine: Machine,
    second_worker: Child,
    remote_model: LocalModel,
    api: openai.OpenAI,
    log_dir: Path,
) -> None:
    with ThreadPoolExecutor(2) as pool:
        first: Future[Any] = pool.submit(ask, api, ESSAY, 400)
        running = answer_running_with_text(server)
        second: Future[Any] = pool.submit(ask, api, "Name a colour.", 8)
        waiting = answer_waiting_in_the_models_queue(server, remote_model)

        running.refresh_from_db()
        assert running.state == Message.State.RUNNING
        # A warm shutdown, as supervisord's stop or Ctrl-C: the running answer ends whole, the
        # waiting one stays in the model's queue.
        assert second_worker.stop(signal.SIGTERM, timeout=PATIENCE) == 0
        assert first.result(timeout=PATIENCE).choices[0].finish_reason in ("stop", "length")
        running.refresh_from_db()
        assert running.state == Message.State.DONE
        waiting.refresh_from_db()
        assert waiting.state == Message.State.QUEUED
        assert not second.done()

        back = worker_start("second-machine", machine, server, log_dir)
        try:
            assert second.result(timeout=PATIENCE).choices[0].message.content
        finally:
            back.stop()
    waiting.refresh_from_db()
    assert waiting.state == Message.State.DONE
    assert waiting.worker == "second-machine"
    assert waiting.worker_run not in ("", running.worker_run)


def test_a_killed_worker_fails_its_answer_with_its_text_and_another_serves_the_waiting_one(
    server: Server,
    machine: Machine,
    second_worker: Child,
    remote_model: LocalModel,
    api: openai.OpenAI,
    tmp_path: Path,
    log_dir: Path,
) -> None:
    with ThreadPoolExecutor(2) as pool:
        first: Future[Any] = pool.submit(ask, api, ESSAY, 600)
        running = answer_running_with_text(server)
        second: Future[Any] = pool.submit(ask, api, "Name a colour.", 8)
        waiting = answer_waiting_in_the_models_queue(server, remote_model)

        # What the kernel's OOM killer sends: nothing is saved by the worker itself.
        second_worker.process.send_signal(signal.SIGKILL)
        second_worker.process.wait(timeout=PATIENCE)
        written = chunk_text(server, running)
        assert written

        # A third machine pinned to the same model: its reaper fails the dead worker's answer
        # and it takes the one waiting in the model's queue.
        third = Machine(data_dir=tmp_path / "third", models_dir=tmp_path / "third" / "models")
        third.models_dir.mkdir(parents=True)
        link_or_copy(machine.models_dir / remote_model.file, third.models_dir / remote_model.file)
        other = worker_start("third-machine", third, server, log_dir)
        try:
            with pytest.raises(openai.InternalServerError) as caught:
                first.result(timeout=PATIENCE)
            assert second.result(timeout=PATIENCE).choices[0].message.content
        finally:
            other.stop()
    assert caught.value.body["message"] == WORKER_LOST_ERROR
    running.refresh_from_db()
    assert running.state == Message.State.FAILED
    assert running.content == written
    waiting.refresh_from_db()
    assert waiting.state == Message.State.DONE
    assert waiting.worker == "third-machine"


def http_json(url: str, headers: dict[str, str]) -> Any:
    return json.loads(http_text(url, headers))


def http_text(url: str, headers: dict[str, str]) -> str:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:  # /healthz answers 503 with its body
        return str(exc.read().decode())


def test_a_prompt_sent_while_the_machine_is_down_is_served_when_it_is_back(
    server: Server,
    machine: Machine,
    second_worker: Child,
    api: openai.OpenAI,
    log_dir: Path,
) -> None:
    assert second_worker.stop(signal.SIGTERM, timeout=PATIENCE) == 0

    def gone() -> bool:
        return worker_state_get(server.redis, "second-machine") is None

    wait_for(gone, timeout=PATIENCE, what="the stopped worker's presence to go")
    with ThreadPoolExecutor(1) as pool:
        call: Future[Any] = pool.submit(ask, api, "Name a colour.", 8)
        # With no worker pinned to the model, the prompt waits in the shared queues.
        shared = Queue(generation_queue_name("normal"), connection=server.redis)
        waiting = wait_for(
            lambda: next((m for m in answers() if str(m.id) in shared.get_job_ids()), None),
            timeout=PATIENCE,
            what="the prompt to wait in the shared queue",
        )
        back = worker_start("second-machine", machine, server, log_dir)
        try:
            # Its reaper moves the prompt to the model's own queue once the prompt is 10 s old.
            assert call.result(timeout=PATIENCE).choices[0].message.content
        finally:
            back.stop()
    waiting.refresh_from_db()
    assert waiting.state == Message.State.DONE
    assert waiting.worker == "second-machine"


def test_an_unpinned_worker_without_the_file_fails_the_prompt_with_a_sentence(
    server: Server, remote_model: LocalModel, api: openai.OpenAI, log_dir: Path
) -> None:
    """While no worker pinned to the model runs, its prompts go to the shared queues: the
    server's own unpinned worker takes one and says the file is not in its models dir."""
    env = child_env(REDIS_URL=server.redis_url, WIZ_THREADS="1")
    command = inference_worker_command(name="server-inference")
    child = Child("server-inference", command, env, log_dir)
    try:

        def registered() -> bool:
            state = worker_state_get(server.redis, "server-inference")
            return state is not None and state.pid == child.pid

        wait_for(registered, timeout=PATIENCE, what="the server's worker to register")
        with pytest.raises(openai.InternalServerError) as caught:
            ask(api, "Name a colour.", 8)
    finally:
        child.stop()
    error = caught.value.body["message"]
    assert error.startswith(f"The file of model {REMOTE_MODEL} is missing")
    [message] = answers()
    assert (message.state, message.worker, message.error) == (
        Message.State.FAILED,
        "server-inference",
        error,
    )
