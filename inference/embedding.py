"""Vectors of texts, for retrieval: a GGUF model run by llama.cpp in embedding mode, on the
inference workers only (this module loads llama.cpp; the web process never imports it).

One `Embedder` per process, kept loaded across jobs and questions: the passages of a document
(background work, `documents.jobs.document_embed_job`) and the question of a chat turn
(`documents.retrieval`) are embedded by the same one, one call at a time (a llama.cpp context
is not for two threads at once). It is llama-cpp-python's `Llama(embedding=True)`, apart from
the runtime's engines: the batched engine decodes for sampling, with causal logits and a KV
cache per slot, while an embedding wants pooled hidden states of whole texts at once. The
weights are the GGUF file mapped into memory (mmap), so when the embedding model is also the
model that answers, its pages are shared with the runtime's copy; what this adds is a context
of `EMBED_BATCH` tokens and its compute buffers (docs/documents.md has the measured figure).

Vectors are the mean of the text's token states (llama.cpp's mean pooling), made unit length,
as float32: cosine similarity is then a dot product.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import llama_cpp
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

# Tokens one decode takes, and the longest text embedded whole (longer ones are cut here; a
# passage, about 200 words, is about 250-300 tokens). Small on purpose: several passages in one
# decode were slower per passage on CPU than one at a time (measured: 6.8 s against 4.4 s a
# passage on a busy 2-core box), since every token then attends over the whole shared cache,
# and llama.cpp keeps a logit row per token of the decode (512 x the vocabulary, in float32).
EMBED_BATCH = 512

Vectors = npt.NDArray[np.float32]


class Embedder:
    """One embedding model loaded, its vectors for lists of texts."""

    def __init__(self, path: Path, *, n_threads: int) -> None:
        self.path = path
        self._llama = llama_cpp.Llama(
            model_path=str(path),
            embedding=True,
            n_ctx=EMBED_BATCH,
            n_batch=EMBED_BATCH,
            n_ubatch=EMBED_BATCH,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            verbose=False,
        )
        self._lock = threading.Lock()
        self.dimensions = int(self._llama.n_embd())

    def embed(self, texts: list[str]) -> Vectors:
        """One unit-length float32 row per text (a text with no tokens gets zeros)."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        raw = []
        for text in texts:
            # One text a call, so a question waits for one passage at most, not a batch.
            with self._lock:
                raw.append(self._llama.embed(text, normalize=False, truncate=True))
        vectors = np.asarray(raw, dtype=np.float32).reshape(len(texts), self.dimensions)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)

    def close(self) -> None:
        with self._lock:
            self._llama.close()


_embedder: Embedder | None = None
_embedder_lock = threading.Lock()
# Set when the worker stops: embedding jobs end after their batch instead of holding the
# shutdown for the rest of a document (a question queues what is left again).
_stopping = threading.Event()


def embeddings_stop() -> None:
    _stopping.set()


def embeddings_stopping() -> bool:
    return _stopping.is_set()


def embedder(path: Path, *, n_threads: int) -> Embedder:
    """This process's embedder for the model file at `path`, loaded on first use and kept; a
    different file (the operator changed the embedding model) replaces it."""
    global _embedder
    with _embedder_lock:
        if _embedder is not None and _embedder.path != path:
            log.info("Embedding model changed: closing %s", _embedder.path)
            _embedder.close()
            _embedder = None
        if _embedder is None:
            log.info("Loading %s for embeddings", path)
            _embedder = Embedder(path, n_threads=n_threads)
        return _embedder
