"""Loading and unloading models on a chosen worker, as its presence record reports it."""

from __future__ import annotations

from typing import Any

import pytest

from inference.presence import WorkerState, worker_states
from models_admin.worker_control import (
    WorkerControlError,
    worker_model_load,
    worker_model_unload,
)
from tests.conftest import start_worker
from tests.processes import wait_for
from wizweb.redis_server import redis_connection

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def state_of(name: str) -> WorkerState | None:
    return next((s for s in worker_states(redis_connection()) if s.name == name), None)


@pytest.fixture
def idle_worker(second_model: Any, log_dir: Any) -> Any:
    child = start_worker("control-test", log_dir)
    yield child
    child.stop()


def test_load_and_unload_change_the_workers_models_and_memory(
    idle_worker: Any, second_model: Any
) -> None:
    before = state_of("control-test")
    assert before is not None and before.models == []
    worker_model_load(worker="control-test", model=second_model, options={"n_ctx": 4096})
    loaded = wait_for(
        lambda: (s := state_of("control-test")) and s.models == [second_model.name] and s,
        timeout=30,
        what="the model to be loaded",
    )
    second_model.refresh_from_db()
    assert second_model.load_options["n_ctx"] == 4096
    assert loaded.rss_bytes > before.rss_bytes + 50_000_000
    assert loaded.memory_used_bytes > 0

    worker_model_unload(worker="control-test", model=second_model)
    unloaded = wait_for(
        lambda: (s := state_of("control-test")) and s.models == [] and s,
        timeout=30,
        what="the model to be unloaded",
    )
    # Unloading gives the memory back: most of what loading took.
    assert unloaded.rss_bytes < loaded.rss_bytes - 40_000_000
    assert unloaded.memory_used_bytes == 0


def test_a_load_that_would_not_fit_is_refused_with_numbers(second_model: Any, log_dir: Any) -> None:
    small = start_worker("small-budget", log_dir, WIZ_WORKER_MEMORY_MB="100")
    try:
        with pytest.raises(WorkerControlError) as caught:
            worker_model_load(worker="small-budget", model=second_model, options={"n_ctx": 4096})
    finally:
        small.stop()
    message = str(caught.value)
    assert "needs about 0.2" in message
    assert "has 0.10 GB free" in message
    second_model.refresh_from_db()
    assert "n_ctx" not in second_model.load_options


def test_bad_requests_are_refused(idle_worker: Any, second_model: Any) -> None:
    with pytest.raises(WorkerControlError, match="no live inference worker"):
        worker_model_load(worker="nobody", model=second_model, options={})
    with pytest.raises(WorkerControlError, match="n_batch must be"):
        worker_model_load(worker="control-test", model=second_model, options={"n_batch": 0})
    with pytest.raises(WorkerControlError, match="not a load option"):
        worker_model_load(worker="control-test", model=second_model, options={"mlock": 1})
    with pytest.raises(WorkerControlError, match="does not hold"):
        worker_model_unload(worker="control-test", model=second_model)
