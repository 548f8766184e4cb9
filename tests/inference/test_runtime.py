"""The models one worker holds: loaded once, shared by leases, least recently used evicted,
the budget enforced (with fewer slots before none), never closed under a running answer."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.test import override_settings

from inference.runtime import ModelLoadError, ModelRuntime
from models_admin.loading import model_memory_estimate, model_spec

pytestmark = [pytest.mark.stack, pytest.mark.django_db]

SMALL = {"n_ctx": 512, "parallel": 2}


def test_it_loads_a_model_once_and_reuses_it(default_model: Any) -> None:
    default_model.load_options = SMALL
    runtime = ModelRuntime()
    first = runtime.load(model_spec(default_model))
    with runtime.lease(model_spec(default_model)) as engine:
        assert engine is first
    assert runtime.loaded() == [default_model.name]
    assert runtime.unload(str(default_model.path))
    assert runtime.loaded() == []
    assert not runtime.unload(str(default_model.path))


def test_it_estimates_weights_plus_a_kv_cache_per_slot(default_model: Any) -> None:
    small = model_memory_estimate(default_model, 512, parallel=1)
    large = model_memory_estimate(default_model, 8192, parallel=1)
    assert small > default_model.size_bytes
    # SmolLM2-135M: 30 layers, 3 of 9 heads for K/V at width 576: 2*30*192*2 bytes per token.
    assert large - small == (8192 - 512) * 2 * 30 * 192 * 2
    assert model_memory_estimate(default_model, 512, parallel=8) - small == 7 * 512 * 23_040


def test_it_evicts_the_least_recently_used_model_to_fit_the_budget(
    default_model: Any, second_model: Any
) -> None:
    default_model.load_options = second_model.load_options = SMALL
    one = model_memory_estimate(default_model, 512)
    with override_settings(WIZ_WORKER_MEMORY_MB=(one * 3 // 2) >> 20):
        runtime = ModelRuntime()
        runtime.load(model_spec(default_model))
        runtime.load(model_spec(second_model))
        assert runtime.loaded() == [second_model.name]
        runtime.unload(str(second_model.path))


def test_it_loads_fewer_slots_when_the_budget_is_short(default_model: Any) -> None:
    default_model.load_options = {"n_ctx": 4096, "parallel": 8}
    three = model_memory_estimate(default_model, 4096, parallel=3)
    with override_settings(WIZ_WORKER_MEMORY_MB=(three >> 20) + 1):
        runtime = ModelRuntime()
        engine = runtime.load(model_spec(default_model))
        assert engine.parallel == 3
        assert runtime.slots()[default_model.name].total == 3
        assert runtime.used_bytes() == three
        runtime.unload(str(default_model.path))


def test_it_refuses_a_model_larger_than_the_budget_with_numbers(default_model: Any) -> None:
    with override_settings(WIZ_WORKER_MEMORY_MB=50), pytest.raises(ModelLoadError) as caught:
        ModelRuntime().load(model_spec(default_model))
    message = str(caught.value)
    assert "needs about 0.3" in message  # the weights and one slot of 8192 tokens
    assert "may hold 0.05 GB" in message
    assert "WIZ_WORKER_MEMORY_MB" in message


def test_it_loads_each_model_with_its_own_options(default_model: Any) -> None:
    runtime = ModelRuntime()
    default_model.load_options = {"n_ctx": 1024, "n_threads": 1, "n_batch": 128, "parallel": 2}
    engine = runtime.load(model_spec(default_model))
    assert (engine.n_ctx, engine.n_batch, engine.parallel) == (1024, 128, 2)
    default_model.load_options = {"n_ctx": 2048, "parallel": 2}
    reloaded = runtime.load(model_spec(default_model))
    assert reloaded is not engine
    assert reloaded.n_ctx == 2048
    runtime.unload(str(default_model.path))


def test_an_unload_waits_for_the_answers_on_the_model(default_model: Any) -> None:
    default_model.load_options = SMALL
    runtime = ModelRuntime()
    spec = model_spec(default_model)
    unloaded_at: list[float] = []
    with runtime.lease(spec):
        unloading = threading.Thread(
            target=lambda: (runtime.unload(spec.key), unloaded_at.append(time.monotonic()))
        )
        unloading.start()
        time.sleep(0.5)
        assert not unloaded_at, "unloaded under a running answer"
        assert runtime.loaded() == [default_model.name]
        released_at = time.monotonic()
    unloading.join(timeout=10)
    assert unloaded_at and unloaded_at[0] >= released_at
    assert runtime.loaded() == []
