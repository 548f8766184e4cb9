"""The models an inference worker holds in memory: loaded once per process, kept across jobs,
shared by every answer being written, and evicted least-recently-used first when a new one
would not fit in the worker's budget.

Answers hold a *lease* on their model (`with runtime.lease(spec) as engine:`). A model with
leases is never closed under them: unloading it, reloading it with new options or evicting it
for another model waits until its answers have ended, and marks it *draining* meanwhile so
that no new answer starts on it (they wait, then load it again if they still need it).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import llama_cpp
from django.conf import settings
from llama_cpp._internals import LlamaModel

from inference.engine import BatchedEngine, SlotsState
from inference.loading import ModelSpec, slots_that_fit
from inference.prefix_cache import PrefixCache

log = logging.getLogger(__name__)

GIB = 1 << 30


class ModelLoadError(Exception):
    pass


def _gib(size: int) -> str:
    return f"{size / GIB:.2f} GB"


@dataclass(eq=False)
class Loaded:
    engine: BatchedEngine
    spec: ModelSpec
    bytes: int
    leases: int = 0
    draining: bool = False
    slots: int = field(default=0)


class ModelRuntime:
    """Loaded engines of this process, keyed by model file (ids of deleted rows can come back)."""

    def __init__(self) -> None:
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._changed = threading.Condition()
        # One load at a time; leases of models already loaded do not wait for it.
        self._loading = threading.Lock()

    @property
    def budget_bytes(self) -> int:
        return int(settings.WIZ_WORKER_MEMORY_MB) << 20

    @cached_property
    def prefix_cache(self) -> PrefixCache:
        """Prompt caches saved to host memory, for every model of this worker: a budget of its
        own (WIZ_PROMPT_CACHE_MB), beside the models'."""
        return PrefixCache(int(settings.WIZ_PROMPT_CACHE_MB) << 20)

    # Read by the presence thread while a load may take seconds: a snapshot of the entries
    # (one C-level copy under the GIL) instead of the lock keeps the heartbeat going.
    def loaded(self) -> list[str]:
        return [entry.spec.name for entry in list(self._loaded.values())]

    def used_bytes(self) -> int:
        return sum(entry.bytes for entry in list(self._loaded.values()))

    def slots(self) -> dict[str, SlotsState]:
        return {entry.spec.name: entry.engine.slots() for entry in list(self._loaded.values())}

    def holds(self, spec: ModelSpec) -> bool:
        """Whether the model is loaded with these options: work that must not cost anyone a
        load (background work) asks first."""
        entry = self._loaded.get(spec.key)
        return entry is not None and not entry.draining and entry.spec.options == spec.options

    @contextmanager
    def lease(self, spec: ModelSpec) -> Iterator[BatchedEngine]:
        """The model's engine, loaded if need be, kept loaded until the block ends."""
        entry = self._acquire(spec)
        try:
            yield entry.engine
        finally:
            with self._changed:
                entry.leases -= 1
                self._changed.notify_all()

    def load(self, spec: ModelSpec) -> BatchedEngine:
        """Load the model now (a no-op if it is held with these options) and keep it."""
        with self.lease(spec) as engine:
            return engine

    def unload(self, key: str) -> bool:
        """Unload the model of file `key` once its answers have ended; whether it was held."""
        with self._changed:
            entry = self._loaded.get(key)
            if entry is None:
                return False
            self._drain(entry)
        return True

    def _acquire(self, spec: ModelSpec) -> Loaded:
        while True:
            with self._changed:
                entry = self._loaded.get(spec.key)
                if entry is not None and entry.spec.options != spec.options:
                    # The admin changed how this model loads: load it again with the new options
                    # once the answers on the old one have ended.
                    log.info("Reloading %s with %s", spec.name, spec.options)
                    self._drain(entry)
                    continue
                if entry is not None and entry.draining:
                    self._changed.wait()
                    continue
                if entry is not None:
                    entry.leases += 1
                    self._loaded.move_to_end(spec.key)
                    return entry
            with self._loading:
                if spec.key in self._loaded:
                    continue  # another thread loaded it meanwhile
                self._make_room(spec)
                entry = self._load(spec)
            with self._changed:
                self._loaded[spec.key] = entry
                self._changed.notify_all()

    def _drain(self, entry: Loaded) -> None:
        """Close `entry` once nobody leases it; the caller holds `_changed`."""
        entry.draining = True
        while entry.leases > 0:
            self._changed.wait()
        if self._loaded.get(entry.spec.key) is entry:
            del self._loaded[entry.spec.key]
            entry.engine.close()
            log.info("Unloaded %s", entry.spec.name)
        self._changed.notify_all()

    def _make_room(self, spec: ModelSpec) -> None:
        budget = self.budget_bytes
        least = spec.memory_bytes(parallel=1)
        if least > budget:
            raise ModelLoadError(
                f"{spec.name} needs about {_gib(least)} but this worker may hold "
                f"{_gib(budget)}; pick a smaller model or context, or raise WIZ_WORKER_MEMORY_MB."
            )
        with self._changed:
            while self._loaded and self.used_bytes() + spec.memory_bytes() > budget:
                if self.used_bytes() + least <= budget:
                    return  # it fits with fewer slots (see _load)
                oldest = next(iter(self._loaded.values()))
                log.info("Unloading %s to make room for %s", oldest.spec.name, spec.name)
                self._drain(oldest)

    def _load(self, spec: ModelSpec) -> Loaded:
        if not spec.path.exists():
            raise ModelLoadError(
                f"The file of model {spec.name} is missing ({spec.path}); download it again "
                "or pick another model."
            )
        options = spec.options
        slots = slots_that_fit(
            size_bytes=spec.size_bytes,
            metadata=spec.metadata,
            n_ctx=options.n_ctx,
            parallel=options.parallel,
            budget=self.budget_bytes - self.used_bytes(),
        )
        if slots < options.parallel:
            log.warning(
                "%s: memory for %d slots of %d tokens, not %d",
                spec.name,
                slots,
                options.n_ctx,
                options.parallel,
            )
        log.info("Loading %s with %s (%d slots)", spec.name, options, slots)
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = options.n_gpu_layers
        try:
            model = LlamaModel(path_model=str(spec.path), params=params, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"llama.cpp could not load {spec.name}: {exc}") from exc
        try:
            engine = BatchedEngine(
                model,
                n_ctx=options.n_ctx,
                parallel=slots,
                n_threads=options.n_threads,
                n_batch=options.n_batch,
                chat_template=spec.chat_template,
                max_per_owner=settings.WIZ_MAX_SLOTS_PER_USER or None,
                prefix_cache=self.prefix_cache,
            )
        except (ValueError, RuntimeError) as exc:
            model.close()
            raise ModelLoadError(f"llama.cpp could not load {spec.name}: {exc}") from exc
        return Loaded(engine, spec, spec.memory_bytes(parallel=slots), slots=slots)


# The one runtime of this process: the inference worker does not fork, so it lives across jobs.
runtime = ModelRuntime()
