"""The models an inference worker holds in memory: loaded once per process, kept across jobs,
and evicted least-recently-used first when a new one would not fit in the worker's budget."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import llama_cpp
from django.conf import settings

from chat.engine import Engine
from models_admin.loading import LoadOptions, model_memory_estimate
from models_admin.models import LocalModel

log = logging.getLogger(__name__)

GIB = 1 << 30


class ModelLoadError(Exception):
    pass


def _gib(size: int) -> str:
    return f"{size / GIB:.2f} GB"


@dataclass
class Loaded:
    engine: Engine
    name: str
    bytes: int
    options: LoadOptions


class ModelRuntime:
    """Loaded engines of this process, keyed by model file (ids of deleted rows can come back)."""

    def __init__(self) -> None:
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def budget_bytes(self) -> int:
        return int(settings.WIZ_WORKER_MEMORY_MB) << 20

    # Read by the presence thread while a load may hold the lock for seconds: a snapshot of the
    # entries (one C-level copy under the GIL) instead of the lock keeps the heartbeat going.
    def loaded(self) -> list[str]:
        return [entry.name for entry in list(self._loaded.values())]

    def used_bytes(self) -> int:
        return sum(entry.bytes for entry in list(self._loaded.values()))

    def engine_for(self, model: LocalModel) -> Engine:
        with self._lock:
            entry = self._loaded.get(model.file)
            options = LoadOptions.for_model(model)
            if entry is not None and entry.options != options:
                # The admin changed how this model loads: load it again with the new options.
                self._loaded.pop(model.file)
                entry.engine.llama.close()
                entry = None
            if entry is not None:
                self._loaded.move_to_end(model.file)
                return entry.engine
            need = model_memory_estimate(model, options.n_ctx)
            budget = self.budget_bytes
            if need > budget:
                raise ModelLoadError(
                    f"{model.name} needs about {_gib(need)} but this worker may hold "
                    f"{_gib(budget)}; pick a smaller model or raise WIZ_WORKER_MEMORY_MB."
                )
            while self._loaded and self.used_bytes() + need > budget:
                _, evicted = self._loaded.popitem(last=False)
                log.info("Unloading %s to make room for %s", evicted.name, model.name)
                evicted.engine.llama.close()
            self._loaded[model.file] = Loaded(self._load(model, options), model.name, need, options)
            return self._loaded[model.file].engine

    def unload(self, model: LocalModel) -> bool:
        with self._lock:
            entry = self._loaded.pop(model.file, None)
        if entry is None:
            return False
        entry.engine.llama.close()
        return True

    def _load(self, model: LocalModel, options: LoadOptions) -> Engine:
        path = model.path
        if not path.exists():
            raise ModelLoadError(
                f"The file of model {model.name} is missing ({path}); download it again "
                "or pick another model."
            )
        log.info("Loading %s with %s", model.name, options)
        try:
            llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=options.n_ctx,
                n_threads=options.n_threads,
                n_gpu_layers=options.n_gpu_layers,
                n_batch=options.n_batch,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"llama.cpp could not load {model.name}: {exc}") from exc
        return Engine(llama, chat_template=model.chat_template)


# The one runtime of this process: the inference worker does not fork, so it lives across jobs.
runtime = ModelRuntime()
