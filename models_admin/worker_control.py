"""Loading and unloading models on a chosen inference worker.

A request is a job (models_admin.control_jobs) on that worker's own control queue, which it
serves before any generation, so a load never runs beside a generation in the same process.
The model's load options are saved on the model first: every worker loads it that way from
then on."""

from __future__ import annotations

from typing import Any

from rq import Queue

from inference.presence import WorkerState, control_queue_name, worker_states
from models_admin.loading import load_options_for, model_memory_estimate
from models_admin.models import LocalModel
from wizweb.redis_server import redis_connection

GIB = 1 << 30
LOAD_OPTION_LIMITS = {
    "n_ctx": (256, 131072),
    "n_threads": (1, 256),
    "n_gpu_layers": (0, 999),
    "n_batch": (32, 8192),
    "parallel": (1, 64),
}


class WorkerControlError(Exception):
    pass


def _gib(size: int) -> str:
    return f"{size / GIB:.2f} GB"


def _worker(name: str) -> WorkerState:
    state = next((s for s in worker_states(redis_connection()) if s.name == name), None)
    if state is None:
        raise WorkerControlError(f"There is no live inference worker named {name!r}.")
    return state


def load_options_check(values: dict[str, Any]) -> dict[str, int]:
    checked = {}
    for key, value in values.items():
        if key not in LOAD_OPTION_LIMITS:
            raise WorkerControlError(
                f"{key!r} is not a load option ({', '.join(LOAD_OPTION_LIMITS)})."
            )
        low, high = LOAD_OPTION_LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise WorkerControlError(f"{key} must be a whole number from {low} to {high}.")
        checked[key] = value
    return checked


def worker_model_load(*, worker: str, model: LocalModel, options: dict[str, Any]) -> None:
    """Ask `worker` to load `model` with `options`, refused with numbers if it cannot fit."""
    state = _worker(worker)
    if model.state != LocalModel.State.READY:
        raise WorkerControlError(f"{model.name} is not ready ({model.state}).")
    model.load_options = {**model.load_options, **load_options_check(options)}
    # A worker short of memory loads it with fewer slots; one slot is the least it needs.
    need = model_memory_estimate(model, load_options_for(model).n_ctx, parallel=1)
    if model.name not in state.models:
        free = min(state.memory_budget_bytes - state.memory_used_bytes, state.host_available_bytes)
        if need > free:
            raise WorkerControlError(
                f"{model.name} needs about {_gib(need)} but worker {worker} has {_gib(free)} "
                "free; unload a model there, pick a smaller context or a smaller file."
            )
    model.save(update_fields=["load_options"])
    Queue(control_queue_name(worker), connection=redis_connection()).enqueue(
        "models_admin.control_jobs.control_load", model.pk, job_timeout=600
    )


def worker_model_unload(*, worker: str, model: LocalModel) -> None:
    state = _worker(worker)
    if model.name not in state.models:
        raise WorkerControlError(f"Worker {worker} does not hold {model.name}.")
    Queue(control_queue_name(worker), connection=redis_connection()).enqueue(
        "models_admin.control_jobs.control_unload", model.pk, job_timeout=60
    )
