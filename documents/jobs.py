"""The job of the documents worker: index one document, by id (documents.services)."""

from __future__ import annotations

from rq import get_current_job

from documents.events import DocumentEvents
from documents.models import Document
from documents.services import document_index
from wizweb.channels_sender import channel_sender


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
