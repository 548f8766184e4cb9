"""How a model is loaded and how much memory that takes, without importing llama.cpp (the web
process uses these too, for the context meter and fit checks)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.conf import settings

from models_admin.models import LocalModel

# llama.cpp's compute buffers and the process itself, beyond weights and KV cache.
OVERHEAD_BYTES = 64 << 20


@dataclass(frozen=True)
class LoadOptions:
    n_ctx: int
    n_threads: int
    n_gpu_layers: int = 0
    n_batch: int = 512

    @classmethod
    def for_model(cls, model: LocalModel) -> LoadOptions:
        """The model's own load options over the defaults: its trained context (capped by
        WIZ_MAX_CONTEXT; llama-cpp-python's own default of 512 is too small for chat) and
        every core (llama-cpp-python's default is half)."""
        trained = model.context_length or 2048
        given = model.load_options or {}
        return cls(
            n_ctx=min(int(given.get("n_ctx") or trained), trained, settings.WIZ_MAX_CONTEXT),
            n_threads=int(given.get("n_threads") or settings.WIZ_THREADS or os.cpu_count() or 1),
            n_gpu_layers=int(given.get("n_gpu_layers") or 0),
            n_batch=int(given.get("n_batch") or 512),
        )


def model_memory_estimate(model: LocalModel, n_ctx: int) -> int:
    """Bytes a loaded model takes: its weights, an f16 KV cache of `n_ctx`, and some overhead."""
    meta = model.metadata
    embedding = int(meta.get("embedding_length") or 0)
    heads = int(meta.get("head_count") or 0)
    kv_heads = int(meta.get("head_count_kv") or heads)
    kv_width = embedding * kv_heads // heads if heads else embedding
    kv_cache = 2 * n_ctx * int(meta.get("block_count") or 0) * kv_width * 2
    return model.size_bytes + kv_cache + OVERHEAD_BYTES
