"""The models one worker holds: loaded once, least recently used evicted, budget enforced."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from models_admin.loading import model_memory_estimate
from models_admin.runtime import ModelLoadError, ModelRuntime

pytestmark = pytest.mark.django_db


def test_it_loads_a_model_once_and_reuses_it(default_model: Any) -> None:
    runtime = ModelRuntime()
    first = runtime.engine_for(default_model)
    assert runtime.engine_for(default_model) is first
    assert runtime.loaded() == [default_model.name]
    assert runtime.unload(default_model)
    assert runtime.loaded() == []


def test_it_estimates_weights_plus_kv_cache(default_model: Any) -> None:
    small = model_memory_estimate(default_model, 512)
    large = model_memory_estimate(default_model, 8192)
    assert small > default_model.size_bytes
    # SmolLM2-135M: 30 layers, 3 of 9 heads for K/V at width 576: 2*30*192*2 bytes per token.
    assert large - small == (8192 - 512) * 2 * 30 * 192 * 2


def test_it_evicts_the_least_recently_used_model_to_fit_the_budget(
    default_model: Any, second_model: Any
) -> None:
    one = model_memory_estimate(default_model, 8192)
    with override_settings(WIZ_WORKER_MEMORY_MB=(one * 3 // 2) >> 20):
        runtime = ModelRuntime()
        runtime.engine_for(default_model)
        runtime.engine_for(second_model)
        assert runtime.loaded() == [second_model.name]
        runtime.unload(second_model)


def test_it_refuses_a_model_larger_than_the_budget_with_numbers(default_model: Any) -> None:
    with override_settings(WIZ_WORKER_MEMORY_MB=50), pytest.raises(ModelLoadError) as caught:
        ModelRuntime().engine_for(default_model)
    message = str(caught.value)
    assert "needs about 0.3" in message
    assert "may hold 0.05 GB" in message
    assert "WIZ_WORKER_MEMORY_MB" in message


def test_it_loads_each_model_with_its_own_options(default_model: Any) -> None:
    runtime = ModelRuntime()
    default_model.load_options = {"n_ctx": 1024, "n_threads": 1, "n_batch": 128}
    engine = runtime.engine_for(default_model)
    assert engine.n_ctx == 1024
    assert engine.llama.n_batch == 128
    default_model.load_options = {"n_ctx": 2048}
    reloaded = runtime.engine_for(default_model)
    assert reloaded is not engine
    assert reloaded.n_ctx == 2048
    runtime.unload(default_model)
