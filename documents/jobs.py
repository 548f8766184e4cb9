"""The jobs of documents: indexing one document, by id, on the documents worker
(documents.services); embedding its passages, on an inference worker's background queue
(documents.embeddings)."""

from __future__ import annotations

import logging

from rq import get_current_job

from documents.embeddings import document_embed
from documents.events import DocumentEvents
from documents.models import Document
from documents.services import document_index
from wizweb.channels_sender import channel_sender

log = logging.getLogger(__name__)


def document_index_job(document_id: int) -> str:
    job = get_current_job()
    assert job is not None
    owner_id = Document.objects.filter(pk=document_id).values_list("owner_id", flat=True).first()
    if owner_id is None:
        return f"document {document_id}: gone"
    document = document_index(
        document_id=document_id,
        job_id=job.id,
        events=DocumentEvents(channel_sender, user_id=owner_id),
        connection=job.connection,
        time_limit=job.timeout,
    )
    return f"document {document_id}: {document.state if document else 'gone'}"


def document_embed_job(document_id: int, model_name: str) -> str:
    """Embed a ready document's passages (background work on an inference worker). A failure
    leaves the passages it did not reach without vectors, found by the full text alone, and is
    only logged: a later question over the document queues the job again."""
    try:
        done = document_embed(document_id=document_id, model_name=model_name)
    except Exception:
        log.warning("Embedding document %s failed", document_id, exc_info=True)
        raise
    return f"document {document_id}: {done} passages embedded"
