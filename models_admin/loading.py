"""From a catalogued model to what the inference side loads: its load options over the
defaults, its memory estimate and its `inference.loading.ModelSpec`. No llama.cpp here: the
web process uses these for the context meter and the fit checks."""

from __future__ import annotations

import os

from django.conf import settings

from inference.loading import LoadOptions, ModelSpec, memory_estimate
from models_admin.models import LocalModel


def load_options_for(model: LocalModel) -> LoadOptions:
    """The model's own load options over the defaults: its trained context (capped by
    WIZ_MAX_CONTEXT; llama-cpp-python's own default of 512 is too small for chat), every core
    (llama.cpp's default is half) and WIZ_PARALLEL slots."""
    trained = model.context_length or 2048
    given = model.load_options or {}
    return LoadOptions(
        n_ctx=min(int(given.get("n_ctx") or trained), trained, settings.WIZ_MAX_CONTEXT),
        n_threads=int(given.get("n_threads") or settings.WIZ_THREADS or os.cpu_count() or 1),
        n_gpu_layers=int(given.get("n_gpu_layers") or 0),
        n_batch=int(given.get("n_batch") or 512),
        parallel=int(given.get("parallel") or settings.WIZ_PARALLEL),
    )


def model_memory_estimate(model: LocalModel, n_ctx: int, parallel: int | None = None) -> int:
    """Bytes the model takes loaded with a context of `n_ctx` in each of its slots (by default
    the slots it would be loaded with)."""
    return memory_estimate(
        size_bytes=model.size_bytes,
        metadata=model.metadata,
        n_ctx=n_ctx,
        parallel=load_options_for(model).parallel if parallel is None else parallel,
    )


def model_spec(model: LocalModel) -> ModelSpec:
    return ModelSpec(
        name=model.name,
        path=model.path,
        size_bytes=model.size_bytes,
        metadata=model.metadata,
        chat_template=model.chat_template,
        options=load_options_for(model),
    )
