"""How a model is loaded and what memory that takes, without importing llama.cpp (the web
process uses these too, for the context meter and the fit checks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# llama.cpp's compute buffers and the process itself, beyond weights and KV cache.
OVERHEAD_BYTES = 64 << 20


@dataclass(frozen=True)
class LoadOptions:
    n_ctx: int  # what one answer may use: every slot holds a whole context
    n_threads: int
    n_gpu_layers: int = 0
    n_batch: int = 512
    parallel: int = 8  # slots: answers written at once


def kv_bytes_per_token(metadata: dict[str, Any]) -> int:
    """An f16 KV cache's bytes for one token of one sequence, from the GGUF header's shape."""
    embedding = int(metadata.get("embedding_length") or 0)
    heads = int(metadata.get("head_count") or 0)
    kv_heads = int(metadata.get("head_count_kv") or heads)
    kv_width = embedding * kv_heads // heads if heads else embedding
    return 2 * int(metadata.get("block_count") or 0) * kv_width * 2


def memory_estimate(
    *, size_bytes: int, metadata: dict[str, Any], n_ctx: int, parallel: int = 1
) -> int:
    """Bytes a loaded model takes: its weights, an f16 KV cache of `n_ctx` tokens for each of
    its `parallel` slots, and some overhead."""
    return size_bytes + kv_bytes_per_token(metadata) * n_ctx * parallel + OVERHEAD_BYTES


def slots_that_fit(
    *, size_bytes: int, metadata: dict[str, Any], n_ctx: int, parallel: int, budget: int
) -> int:
    """The most slots (at most `parallel`, at least 1) whose KV caches fit in `budget` beside
    the weights: a worker short of memory writes fewer answers at once rather than none."""
    per_slot = kv_bytes_per_token(metadata) * n_ctx
    room = budget - size_bytes - OVERHEAD_BYTES
    if per_slot <= 0:
        return parallel
    return max(1, min(parallel, room // per_slot))


@dataclass(frozen=True)
class ModelSpec:
    """Everything the runtime needs to load one model file, from whoever keeps the catalogue."""

    name: str
    path: Path
    size_bytes: int
    metadata: dict[str, Any]
    chat_template: str
    options: LoadOptions

    @property
    def key(self) -> str:
        return str(self.path)

    def memory_bytes(self, parallel: int | None = None) -> int:
        return memory_estimate(
            size_bytes=self.size_bytes,
            metadata=self.metadata,
            n_ctx=self.options.n_ctx,
            parallel=self.options.parallel if parallel is None else parallel,
        )
