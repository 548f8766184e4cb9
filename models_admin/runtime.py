"""The models an inference worker holds in memory, loaded once per process and kept across jobs."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import llama_cpp
from django.conf import settings

from chat.engine import Engine
from models_admin.models import LocalModel

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    pass


@dataclass(frozen=True)
class LoadOptions:
    n_ctx: int
    n_threads: int
    n_gpu_layers: int = 0
    n_batch: int = 512

    @classmethod
    def for_model(cls, model: LocalModel) -> LoadOptions:
        trained = model.context_length or 2048
        return cls(
            n_ctx=min(trained, settings.WIZ_MAX_CONTEXT),
            # llama-cpp-python's own default is half the cores; a chat box wants them all.
            n_threads=settings.WIZ_THREADS or os.cpu_count() or 1,
        )


class ModelRuntime:
    """Loaded engines of this process, keyed by model file (ids of deleted rows can come back)."""

    def __init__(self) -> None:
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def loaded(self) -> list[str]:
        return list(self._engines)

    def engine_for(self, model: LocalModel) -> Engine:
        with self._lock:
            engine = self._engines.get(model.file)
            if engine is None:
                engine = self._load(model, LoadOptions.for_model(model))
                self._engines[model.file] = engine
            return engine

    def unload(self, model: LocalModel) -> None:
        with self._lock:
            engine = self._engines.pop(model.file, None)
        if engine is not None:
            engine.llama.close()

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
