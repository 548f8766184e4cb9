"""Embeddings of passages (docs/documents.md, "Embeddings"): which model makes them
(`WIZ_EMBEDDING_MODEL`), queueing a document's embedding job on the inference workers'
background queue, the job's work, and the nearest passages to a question's vector.

Importing this module never loads llama.cpp: the documents worker and the web process queue
jobs through it. Only `document_embed` and `question_vector` load `inference.embedding`, and
they run on an inference worker.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from documents.models import Document, Passage
from inference.presence import background_queue_name, pinned_workers_for
from models_admin.loading import load_options_for
from models_admin.models import LocalModel
from wizweb.redis_server import redis_connection

if TYPE_CHECKING:
    from inference.embedding import Embedder, Vectors

log = logging.getLogger(__name__)

EMBED_JOB = "documents.jobs.document_embed_job"
# Whose work it is, for the worker's share of slots per person: nobody's (like titles).
EMBED_OWNER = "embeddings"
# Passages embedded and saved per step; between steps the job yields to answers.
EMBED_BATCH = 4
# How often a job paused for answers looks again.
ANSWERS_POLL = 0.1
_WAITING = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def embedding_model(name: str | None = None) -> LocalModel | None:
    """The model named `name` (by default WIZ_EMBEDDING_MODEL), when it is set and ready."""
    name = settings.WIZ_EMBEDDING_MODEL if name is None else name
    if not name:
        return None
    ready = LocalModel.objects.filter(name=name, state=LocalModel.State.READY)
    return ready.order_by("pk").first()


def embed_job_id(document_id: int) -> str:
    return f"embed-document-{document_id}"


def documents_to_embed(
    document_ids: Iterable[int] | QuerySet[Any, Any], model_name: str
) -> list[int]:
    """Of these documents, the ready ones with a passage that has no vector of `model_name`
    (never embedded, or embedded by a model since changed)."""
    stale = Passage.objects.filter(
        document__in=document_ids, document__state=Document.State.READY
    ).exclude(embedding_model=model_name)
    return sorted(set(stale.order_by().values_list("document_id", flat=True).distinct()))


def document_embeddings_request(*, document_ids: Iterable[int] | QuerySet[Any, Any]) -> list[int]:
    """Queue the embedding job of each of these documents that needs one, once the transaction
    commits; the ids queued. Nothing while no embedding model is set. A document whose job is
    already waiting or running is left to it."""
    model = embedding_model()
    if model is None:
        return []
    wanted = documents_to_embed(document_ids, model.name)
    if not wanted:
        return []
    model_id, model_name = model.pk, model.name

    def enqueue() -> None:
        connection = redis_connection()
        pinned = bool(pinned_workers_for(connection, model_id))
        queue = Queue(background_queue_name(model_id if pinned else None), connection=connection)
        for document_id in wanted:
            job_id = embed_job_id(document_id)
            try:
                if Job.fetch(job_id, connection=connection).get_status() in _WAITING:
                    continue
            except NoSuchJobError:
                pass
            queue.enqueue(
                EMBED_JOB,
                document_id,
                # The job embeds with the model of the process that asked, whichever worker
                # takes it.
                model_name,
                job_id=job_id,
                job_timeout=settings.WIZ_GENERATION_TIMEOUT,
                meta={"owner": EMBED_OWNER},
                result_ttl=600,
                failure_ttl=86400,
            )

    transaction.on_commit(enqueue)
    return wanted


def embeddings_sweep(**_: object) -> list[int]:
    """At an inference worker's start: queue the embedding of every ready document with a
    passage that lacks a vector of the model set now (indexed before the setting, embedded by a
    model since changed, or left half done by a worker that stopped or died), so none waits for
    a question to reach it. Nothing while no embedding model is set; the ids queued."""
    ready = Document.objects.filter(state=Document.State.READY).values("pk")
    return document_embeddings_request(document_ids=ready)


def _embedder(model: LocalModel) -> Embedder:
    from inference.embedding import embedder  # loads llama.cpp: inference workers only

    return embedder(model.path, n_threads=load_options_for(model).n_threads)


def _answers_running() -> bool:
    from inference.runtime import runtime

    return any(s.busy or s.waiting for s in runtime.slots().values())


def document_embed(
    *, document_id: int, model_name: str, answers_running: Callable[[], bool] = _answers_running
) -> int:
    """Give every passage of a ready document a vector of the model `model_name` (on an
    inference worker, as background work); how many were embedded (0 if that model is gone).
    It embeds EMBED_BATCH passages at a time and, before each batch, waits while this worker
    writes or holds any answer, so an answer never shares the cores with it for longer than
    one batch. A document deleted (or its passages gone) meanwhile ends it: the next batch
    finds nothing left to embed; so does the worker stopping, after the batch in hand."""
    from inference.embedding import embeddings_stopping

    model = embedding_model(model_name)
    if model is None:
        return 0
    embedder = _embedder(model)
    done = 0
    while True:
        while answers_running() and not embeddings_stopping():
            time.sleep(ANSWERS_POLL)
        if embeddings_stopping():
            return done  # the worker is stopping; a question queues the rest again
        batch = list(
            Passage.objects.filter(document_id=document_id, document__state=Document.State.READY)
            .exclude(embedding_model=model.name)
            .order_by("ordinal")
            .values_list("pk", "text")[:EMBED_BATCH]
        )
        if not batch:
            return done
        vectors = embedder.embed([text for _, text in batch])
        with transaction.atomic():
            for (pk, _), vector in zip(batch, vectors, strict=True):
                Passage.objects.filter(pk=pk).update(
                    embedding=vector.tobytes(), embedding_model=model.name
                )
        done += len(batch)


def embedding_here() -> bool:
    """Whether this process may embed a question: only where llama.cpp is loaded already (an
    inference worker loads it at start). Elsewhere (the web process) retrieval is full text
    only, rather than loading a model into a process that must never hold one."""
    return "llama_cpp" in sys.modules


def question_vector(question: str) -> tuple[str, Vectors] | None:
    """The question's vector and the model that made it, or None: no embedding model, a
    process without llama.cpp, or the model failing (logged; the full text still answers)."""
    if not settings.WIZ_EMBEDDING_MODEL or not embedding_here() or not question.strip():
        return None
    model = embedding_model()
    if model is None:
        return None
    try:
        return model.name, _embedder(model).embed([question])[0]
    except Exception:
        log.warning("Could not embed a question with %s", model.name, exc_info=True)
        return None


def passages_nearest(
    *, readable: QuerySet[Document], model_name: str, vector: Vectors, limit: int
) -> list[int]:
    """The ids of the `limit` passages of these documents whose vectors (of `model_name`) are
    nearest `vector` by cosine similarity, nearest first. Passages without such a vector are
    not among them (the full text still finds them)."""
    rows = Passage.objects.filter(
        document__in=readable.values("pk"), embedding_model=model_name
    ).values_list("pk", "embedding")
    width = vector.shape[0] * 4
    ids: list[int] = []
    blobs: list[bytes] = []
    for pk, blob in rows.iterator(chunk_size=2000):
        if blob is not None and len(blob) == width:
            ids.append(pk)
            blobs.append(bytes(blob))
    if not ids:
        return []
    matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), -1)
    scores = matrix @ vector
    # Nearest first; equal scores in id order, so the answer never depends on the database's.
    order = np.lexsort((np.asarray(ids), -scores))[:limit]
    return [ids[i] for i in order]
