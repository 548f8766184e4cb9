"""Fixtures: three users (owner, outsider, staff), the default model's row, a real inference
worker and a real daphne server as subprocesses sharing the test database and Redis."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.db import connections
from django.test import Client, override_settings
from playwright.sync_api import Browser

from inference.presence import worker_state_get
from models_admin.local_models import localmodel_register, localmodel_register_default
from models_admin.models import LocalModel
from tests.browser import chromium
from tests.processes import (
    Child,
    child_env,
    daphne_command,
    free_port,
    http_status,
    inference_worker_command,
    wait_for,
)
from wizweb.redis_server import redis_connection

PASSWORD = "correct horse battery staple"

# Tests that use these need a worker, daphne or a browser: `make check` leaves them out. So does
# any fixture named `…_worker`: by this suite's convention it starts one.
STACK_FIXTURES = {"web_server"}
FAST_TIER = os.environ.get("WIZ_TEST_TIER") == "fast"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `stack` every test that needs the model, a worker, daphne or a browser: those
    whose module or function says so, the browser tests, and those using a fixture that starts
    one of them. `make check` runs the rest (`-m "not stack"`)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        starts_a_worker = any(name.endswith("_worker") for name in fixtures)
        if item.get_closest_marker("browser") or fixtures & STACK_FIXTURES or starts_a_worker:
            item.add_marker(pytest.mark.stack)


def pytest_configure(config: pytest.Config) -> None:
    """In `make check`, a test (or fixture) that starts a process or loads the model fails at
    once and says how to fix it, so nothing slow slips into the fast tier unmarked."""
    if not FAST_TIER:
        return
    import llama_cpp.llama_cpp as llama

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError(
            "This test needs the model, a worker, daphne or a browser: mark it "
            "`pytest.mark.stack` (or use a fixture that starts them) so `make check` skips it."
        )

    Child.__init__ = refuse  # type: ignore[method-assign,assignment]
    llama.llama_model_load_from_file = refuse


@pytest.fixture(scope="session", autouse=True)
def quick_password_hashes() -> Iterator[None]:
    with override_settings(
        PASSWORD_HASHERS=["tests.hashers.QuickPBKDF2PasswordHasher", *settings.PASSWORD_HASHERS]
    ):
        yield


@pytest.fixture(scope="session", autouse=True)
def async_connections_closed(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """At the end, the database connections that `sync_to_async` opened in asgiref's one
    worker thread are closed before the test database is dropped: PostgreSQL refuses to drop
    a database someone is still connected to (it warned "being accessed by other users")."""
    yield
    with django_db_blocker.unblock():
        SyncToAsync.single_thread_executor.submit(connections.close_all).result()


@pytest.fixture
async def channel_layer_closed() -> AsyncIterator[None]:
    """Each async test has its own event loop; the channel layer's connections and
    subscriptions must not outlive it, nor may the layer itself: each test gets a layer of its
    own, flushed (its subscriptions dropped, its connections closed) at the end.

    The async ORM (`aget`, `acount`, ...) runs in asgiref's one thread for sync code, whose
    database connection would stay open to the end and keep PostgreSQL from dropping the
    test database; it is closed after each test, in that thread."""
    channel_layers.backends.clear()
    yield
    await get_channel_layer().flush()
    channel_layers.backends.clear()
    await sync_to_async(connections.close_all)()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One chromium for a module's browser tests: starting Playwright and chromium costs a
    second or two, paid once a module instead of once a test. Each test opens a context of its
    own (cookies, storage, viewport), so nothing passes from one test to the next."""
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture
def owner(db: None) -> AbstractUser:
    return get_user_model().objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def outsider(db: None) -> AbstractUser:
    return get_user_model().objects.create_user("mallory", password=PASSWORD)


@pytest.fixture
def staff(db: None) -> AbstractUser:
    return get_user_model().objects.create_user("admin", password=PASSWORD, is_staff=True)


@pytest.fixture
def default_model(db: None) -> LocalModel:
    return localmodel_register_default()


def session_cookie(user: AbstractUser) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


@pytest.fixture(scope="session")
def inference_worker(
    django_db_setup: None, django_db_blocker: pytest.FixtureRequest, log_dir: Path
) -> Iterator[Child]:
    """One real inference worker for the whole session: it loads the model once, as in use."""
    child = start_worker("test-inference", log_dir)
    yield child
    child.stop()


def daphne_start(name: str, log_dir: Path, **env: str) -> tuple[Child, str]:
    """daphne serving the real ASGI application on a free port, once it answers; and its URL."""
    port = free_port()
    child = Child(name, daphne_command(port), child_env(**env), log_dir)
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        if child.process.poll() is not None:
            raise RuntimeError(f"daphne exited:\n{child.output()}")
        return http_status(f"{url}/healthz") is not None

    wait_for(answering, timeout=60, what="daphne to answer")
    return child, url


@pytest.fixture(scope="session")
def web_server(django_db_setup: None, log_dir: Path) -> Iterator[str]:
    """daphne on the test database."""
    child, url = daphne_start("daphne", log_dir)
    yield url
    child.stop()


SECOND_MODEL = "SmolLM2 second copy"
# A JSON-mode prompt the default model answers with a short object, greedy or sampled.
TOM_AS_JSON = 'Give me a JSON object with the keys "name" and "age" for a cat named Tom who is 3.'


@pytest.fixture
def second_model(db: None, default_model: LocalModel) -> Iterator[LocalModel]:
    """A second registered model (the same weights under another file name)."""
    from tests.bootstrap import link_or_copy

    path = Path(settings.MODELS_DIR) / "second-copy.gguf"
    if not path.exists():
        link_or_copy(default_model.path, path)
    yield localmodel_register(path=path, name=SECOND_MODEL, sha256=default_model.sha256)


@pytest.fixture
def pinned_worker(second_model: LocalModel, log_dir: Path) -> Iterator[Child]:
    """An inference worker pinned to the second model, for this test only."""
    child = start_worker("pinned-second", log_dir, model=SECOND_MODEL)
    yield child
    child.stop()


@pytest.fixture
def serial_pinned_worker(second_model: LocalModel, log_dir: Path) -> Iterator[Child]:
    """A worker pinned to the second model that writes one answer at a time (one slot), for
    tests of what waits in the queue."""
    child = start_worker("pinned-second", log_dir, model=SECOND_MODEL, WIZ_PARALLEL="1")
    yield child
    child.stop()


@pytest.fixture
def titling_worker(second_model: LocalModel, log_dir: Path) -> Iterator[Child]:
    """A worker pinned to the second model with model titles on (the tests' other workers
    have them off, see tests/bootstrap.py), writing one answer at a time (one slot), so that
    what waits in its queues waits in a known order."""
    child = start_worker(
        "titles-second", log_dir, model=SECOND_MODEL, WIZ_PARALLEL="1", WIZ_MODEL_TITLES="true"
    )
    yield child
    child.stop()


def start_worker(name: str, log_dir: Path, *, model: str | None = None, **env: str) -> Child:
    command = inference_worker_command(name=name, model=model)
    # Several test workers share two cores: one llama.cpp thread each keeps them from spinning
    # against each other.
    child = Child(name, command, child_env(**{"WIZ_THREADS": "1", **env}), log_dir)

    def registered() -> bool:
        if child.process.poll() is not None:
            raise RuntimeError(f"The worker exited:\n{child.output()}")
        # This very process: a record of the same name may still be a dead namesake's.
        state = worker_state_get(redis_connection(), name)
        return state is not None and state.pid == child.pid

    try:
        wait_for(registered, timeout=60, what=f"the inference worker {name} to register")
    except BaseException:
        child.stop()
        raise
    return child
