"""Inference workers as the rest of the system sees them: a presence record per worker in Redis
(models held, pinned model, busy or idle, resident memory, queue depths, heartbeat), refreshed
every `PRESENCE_INTERVAL` seconds and gone `PRESENCE_TTL` seconds after the worker stops
beating, and the queue names that route a generation to a worker that may run it.

A worker's name outlives its process (supervisord restarts `inference-1` as `inference-1`), so
each process also has a *run*: a random token of its own, in its presence record and in the
messages it writes. A message is alive only while the run that writes it is.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
import redis
from django.conf import settings

PRESENCE_INTERVAL = 1.0
PRESENCE_TTL = 8  # several missed beats: a busy machine must not look dead
WORKERS_SET = "wiz:workers"
# The channel-layer group of the model-admin pages (/ws/models/).
MODELS_GROUP = "models"
PRIORITIES = ("high", "normal", "low")
# This process's run: a worker restarted under the same name gets a new one.
PROCESS_RUN = secrets.token_hex(8)


def presence_key(worker: str) -> str:
    return f"wiz:worker:{worker}"


def generation_queue_names(model_id: int | None = None) -> list[str]:
    """The queues a worker serves, in priority order, the background queue last: the shared
    ones, or a pinned model's own."""
    names = [*settings.GENERATION_QUEUES, settings.BACKGROUND_QUEUE]
    if model_id is None:
        return names
    return [f"{name}.m{model_id}" for name in names]


def generation_queue_name(priority: str, model_id: int | None = None) -> str:
    return generation_queue_names(model_id)[PRIORITIES.index(priority)]


# The tier of background work: after every priority, so a worker takes it only while no answer
# waits and its scheduler pauses it for any answer (inference.worker, inference.scheduler).
BACKGROUND_TIER = len(PRIORITIES)


def background_queue_name(model_id: int | None = None) -> str:
    return generation_queue_names(model_id)[BACKGROUND_TIER]


def control_queue_name(worker: str) -> str:
    """A worker's own queue, served before any generation: load and unload land here."""
    return f"control.{worker}"


@dataclass
class WorkerState:
    name: str
    host: str
    pid: int
    pinned_model: int | None = None
    models: list[str] = field(default_factory=list)
    busy: bool = False
    current_message: str = ""  # the first of `messages`, for older readers
    messages: list[str] = field(default_factory=list)  # the answers it is writing (their tags)
    # Per model held: {"total": slots, "busy": slots writing, "waiting": answers waiting}.
    slots: dict[str, dict[str, int]] = field(default_factory=dict)
    tokens_per_s: float = 0.0  # written in the last few seconds, every answer together
    rss_bytes: int = 0
    memory_budget_bytes: int = 0
    memory_used_bytes: int = 0  # the estimates of the models it holds
    prompt_cache_bytes: int = 0  # prompt caches saved to host memory (WIZ_PROMPT_CACHE_MB)
    host_available_bytes: int = 0
    queue_depths: dict[str, int] = field(default_factory=dict)
    heartbeat: float = 0.0
    run: str = ""

    @property
    def slots_busy(self) -> int:
        return sum(held.get("busy", 0) for held in self.slots.values())

    @property
    def slots_total(self) -> int:
        return sum(held.get("total", 0) for held in self.slots.values())

    @property
    def slots_waiting(self) -> int:
        return sum(held.get("waiting", 0) for held in self.slots.values())

    def as_frame(self) -> dict[str, Any]:
        """The `worker.status` event of /ws/models/ (docs/protocol.md)."""
        return {"type": "worker.status", "worker": self.name, **asdict(self)}


def _state_from(raw: str | bytes) -> WorkerState:
    """A record read back; fields this version does not know (a newer worker's) are left out."""
    values = json.loads(raw)
    known = WorkerState.__dataclass_fields__
    return WorkerState(**{k: v for k, v in values.items() if k in known})


def worker_state_publish(connection: redis.Redis, state: WorkerState) -> None:
    state.heartbeat = time.time()
    pipe = connection.pipeline(transaction=False)
    pipe.set(presence_key(state.name), json.dumps(asdict(state)), ex=PRESENCE_TTL)
    pipe.sadd(WORKERS_SET, state.name)
    pipe.execute()


def worker_state_remove(connection: redis.Redis, name: str) -> None:
    pipe = connection.pipeline(transaction=False)
    pipe.delete(presence_key(name))
    pipe.srem(WORKERS_SET, name)
    pipe.execute()


def worker_is_alive(connection: redis.Redis, name: str) -> bool:
    return bool(name) and bool(connection.exists(presence_key(name)))


def worker_state_get(connection: redis.Redis, name: str) -> WorkerState | None:
    raw = connection.get(presence_key(name)) if name else None
    return _state_from(raw) if raw else None  # type: ignore[arg-type]


def worker_process_gone(state: WorkerState) -> bool:
    """Whether the process behind a presence record is certainly dead: it ran on this host and
    its pid is gone, a zombie, or a newer process. (Elsewhere only the record's expiry tells.)"""
    if state.host != socket.gethostname():
        return False
    try:
        process = psutil.Process(state.pid)
        return process.status() == psutil.STATUS_ZOMBIE or process.create_time() > state.heartbeat
    except psutil.NoSuchProcess:
        return True


def worker_states(connection: redis.Redis) -> list[WorkerState]:
    """Every live worker; names whose presence has expired are dropped from the set."""
    names = sorted(n.decode() for n in connection.smembers(WORKERS_SET))  # type: ignore[union-attr]
    if not names:
        return []
    raw = connection.mget([presence_key(n) for n in names])
    states = []
    for name, value in zip(names, raw, strict=True):  # type: ignore[arg-type]
        if value is None:
            connection.srem(WORKERS_SET, name)
        else:
            states.append(_state_from(value))
    return states


def pinned_workers_for(connection: redis.Redis, model_id: int) -> list[WorkerState]:
    return [s for s in worker_states(connection) if s.pinned_model == model_id]
