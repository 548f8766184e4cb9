"""Collections and documents: creating, renaming, sharing and deleting them, accepting an
upload (cheap checks only: this runs in the web process), and indexing a document (on the
documents worker: extraction, passages, progress), with the reaper for jobs that died."""

from __future__ import annotations

import contextlib
import errno
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import django_rq
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.utils import timezone
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.timeouts import JobTimeoutException

from documents import selectors
from documents.detection import DocumentRefused, detect
from documents.events import DocumentEvents, failed_frame, progress_frame, ready_frame
from documents.extraction import extract
from documents.models import Collection, Document, Passage, documents_dir
from documents.passages import passages_split, token_estimate

log = logging.getLogger(__name__)

INDEX_JOB = "documents.jobs.document_index_job"
SAVE_EVERY = 0.5  # seconds between progress writes (row and frame) while pages are read
# A queued or indexing document whose job is gone is left alone this long after it was queued
# or started: its job may be on its way into Redis or into a worker.
REAP_GRACE = timedelta(seconds=5)
MAX_NAME = 200


class NotOwner(Exception):
    """A change to a collection or document someone may read but not change."""


# Collections


def _collection_name(name: str) -> str:
    name = " ".join(name.split())
    if not name or len(name) > MAX_NAME:
        raise DocumentRefused(
            f"A collection needs a name of 1 to {MAX_NAME} characters.", "invalid_name"
        )
    return name


def _owned(user: User, owner_id: int, what: str) -> None:
    if user.pk != owner_id:
        raise NotOwner(f"Only the owner of this {what} can change it; you may only read it.")


def collection_create(*, user: User, name: str) -> Collection:
    name = _collection_name(name)
    try:
        with transaction.atomic():
            return Collection.objects.create(owner=user, name=name)
    except IntegrityError:
        raise DocumentRefused(
            f"You already have a collection named {name!r}; pick another name.", "invalid_name"
        ) from None


def collection_rename(*, user: User, collection: Collection, name: str) -> Collection:
    _owned(user, collection.owner_id, "collection")
    name = _collection_name(name)
    try:
        with transaction.atomic():
            collection.name = name
            collection.save(update_fields=["name", "updated_at"])
    except IntegrityError:
        raise DocumentRefused(
            f"You already have a collection named {name!r}; pick another name.", "invalid_name"
        ) from None
    return collection


@transaction.atomic
def collection_share(
    *, user: User, collection: Collection, everyone: bool, groups: Iterable[str]
) -> Collection:
    """Share a collection read-only with everyone logged in and/or the named groups (nobody
    and no groups: private again). Only staff may share, and only their own collections: a
    person's files are never opened to others by someone else."""
    _owned(user, collection.owner_id, "collection")
    if not getattr(user, "is_staff", False):
        raise NotOwner("Only staff may share a collection; ask an admin.")
    names = sorted(set(groups))
    found = list(Group.objects.filter(name__in=names))
    missing = set(names) - {g.name for g in found}
    if missing:
        raise DocumentRefused(
            f"There is no group named {', '.join(sorted(missing))}.", "invalid_share"
        )
    collection.shared_with_everyone = everyone
    collection.save(update_fields=["shared_with_everyone", "updated_at"])
    collection.shared_groups.set(found)
    return collection


def collection_delete(*, user: User, collection: Collection) -> None:
    """Delete a collection with its documents, their passages, index entries and files."""
    _owned(user, collection.owner_id, "collection")
    paths = [d.path for d in collection.documents.all()]
    with transaction.atomic():
        collection.delete()
        transaction.on_commit(lambda: _files_remove(paths))


def _files_remove(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


# Documents


def upload_too_large(size: int) -> str | None:
    """The refusal for a file of this size, or None; cheap enough to ask before reading it."""
    limit = settings.WIZ_DOCUMENT_MAX_BYTES
    if size > limit:
        return (
            f"The file is {size / 2**20:,.1f} MB; a document can be at most "
            f"{limit / 2**20:,.1f} MB. Split it or upload a smaller file."
        )
    return None


def document_upload(*, user: User, collection: Collection | None, upload: UploadedFile) -> Document:
    """Keep an uploaded file under a random name and queue its indexing. Refused with a
    DocumentRefused before anything is kept when it is too large, would take its owner past
    their limit, or is not a kind we read (by its content)."""
    if collection is not None:
        _owned(user, collection.owner_id, "collection")
    size = int(upload.size or 0)
    too_large = upload_too_large(size)
    if too_large:
        raise DocumentRefused(too_large, "file_too_large")
    directory = documents_dir()
    directory.mkdir(exist_ok=True)
    stored_name = secrets.token_hex(16)
    path = directory / stored_name
    try:
        with path.open("wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
    except OSError as exc:
        path.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise DocumentRefused(
                "The server's disk is full; ask an admin to free some space.", "disk_full"
            ) from None
        raise
    try:
        size = path.stat().st_size  # what arrived, not what was declared
        too_large = upload_too_large(size)
        if too_large:
            raise DocumentRefused(too_large, "file_too_large")
        # Kept for lists and the download's Content-Disposition: no path, no control characters.
        name = "".join(c for c in Path(upload.name or "").name if c.isprintable())
        name = name.strip()[:255] or "document"
        detected = detect(path, name=name)
        with transaction.atomic():
            # Under a lock on the owner's row, so two uploads at once cannot both slip in under
            # the limit (on SQLite every transaction already begins IMMEDIATE).
            get_user_model().objects.select_for_update().filter(pk=user.pk).first()
            used = selectors.documents_bytes_of(user=user)
            limit = settings.WIZ_DOCUMENTS_MAX_BYTES_PER_USER
            if used + size > limit:
                raise DocumentRefused(
                    f"Your documents take {used / 2**20:,.1f} MB of your "
                    f"{limit / 2**20:,.1f} MB; this file ({size / 2**20:,.1f} MB) does not fit. "
                    "Delete documents you no longer need.",
                    "quota_exceeded",
                )
            document = Document.objects.create(
                owner=user,
                collection=collection,
                name=name,
                size_bytes=size,
                kind=detected.kind,
                encoding=detected.encoding,
                stored_name=stored_name,
                job_id=_new_job_id(),
            )
            _document_enqueue(document)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return document


def _new_job_id() -> str:
    return f"document-{uuid.uuid4().hex}"


def _document_enqueue(document: Document) -> None:
    job_id, pk = document.job_id, document.pk

    def enqueue() -> None:
        django_rq.get_queue(settings.DOCUMENT_QUEUE).enqueue(
            INDEX_JOB, pk, job_id=job_id, job_timeout=settings.WIZ_DOCUMENT_INDEX_TIMEOUT
        )

    transaction.on_commit(enqueue)


def document_delete(*, user: User, document: Document) -> None:
    """Delete a document with its passages (their index entries go with them: triggers in the
    database) and its file. A job still indexing it finds the row gone and stops."""
    _owned(user, document.owner_id, "document")
    path = document.path
    with transaction.atomic():
        document.delete()
        transaction.on_commit(lambda: _files_remove([path]))


# Indexing (on the documents worker)


class _ProgressWriter:
    """Writes pages done to the row and sends them to the owner's pages, at most every
    SAVE_EVERY seconds and at the end of the pages.

    It also holds the job to its time limit page by page. rq's limit is an alarm that raises
    in the horse wherever it is, and a reader that catches every exception (pypdf does, for a
    page it cannot read) can swallow it and read on; the page count then stops it."""

    def __init__(
        self, document: Document, events: DocumentEvents, time_limit: float | None
    ) -> None:
        self.document = document
        self.events = events
        self.last = 0.0
        self.deadline = None if time_limit is None else time.monotonic() + time_limit

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.deadline is not None and now > self.deadline:
            raise JobTimeoutException("The time limit passed while the file was read.")
        if done < total and done > 0 and now - self.last < SAVE_EVERY:
            return
        self.last = now
        self.document.pages_done, self.document.pages_total = done, total
        alive = Document.objects.filter(
            pk=self.document.pk, state=Document.State.INDEXING, job_id=self.document.job_id
        ).update(pages_done=done, pages_total=total)
        if not alive:
            raise _Gone
        self.events.send(progress_frame(self.document))


class _Gone(Exception):
    """The document was deleted (or given up by the reaper) while it was being read."""


def lease_key(document_id: int) -> str:
    return f"wiz:document:{document_id}:lease"


class _Lease:
    """A Redis key that says this process is indexing the document: refreshed every second
    with a five-second expiry, so the reaper knows a killed worker's document within seconds
    (rq's own records of a dead worker last minutes)."""

    TTL = 5
    EVERY = 1.0

    def __init__(self, connection: redis.Redis, document_id: int) -> None:
        self.connection = connection
        self.key = lease_key(document_id)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="document-lease", daemon=True)

    def __enter__(self) -> _Lease:
        self.connection.set(self.key, "1", ex=self.TTL)
        self.thread.start()
        return self

    def _beat(self) -> None:
        while not self.stopped.wait(self.EVERY):
            try:
                self.connection.set(self.key, "1", ex=self.TTL)
            except redis.RedisError:  # Redis restarting: the next beat sets it again
                continue

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):  # it expires by itself
            self.connection.delete(self.key)


def document_index(
    *,
    document_id: int,
    job_id: str,
    events: DocumentEvents,
    connection: redis.Redis,
    time_limit: float | None = None,
) -> Document | None:
    """Extract a queued document's text, cut it into passages and store them (the database
    indexes them as they are written). Only while the document is active and names `job_id`:
    a job made stale by a requeue does nothing. Returns the document, or None if it is gone.
    `time_limit` is the job's (rq stops it then), for the sentence that says so."""
    started = Document.objects.filter(
        pk=document_id, job_id=job_id, state=Document.State.QUEUED
    ).update(state=Document.State.INDEXING, started_at=timezone.now(), error="", pages_done=0)
    if not started:
        return Document.objects.filter(pk=document_id).first()
    with _Lease(connection, document_id):
        document = Document.objects.get(pk=document_id)
        return _document_index(document, job_id, events, time_limit)


def _document_index(
    document: Document, job_id: str, events: DocumentEvents, time_limit: float | None
) -> Document | None:
    document_id = document.pk
    events.send(progress_frame(document))
    try:
        pages = extract(
            document.path,
            kind=document.kind,
            encoding=document.encoding,
            progress=_ProgressWriter(document, events, time_limit),
        )
        passages = [
            Passage(
                document_id=document.pk,
                ordinal=ordinal,
                page=p.page,
                text=p.text,
                tokens=p.tokens,
                chars=len(p.text),
            )
            for ordinal, p in enumerate(passages_split(pages))
        ]
        with transaction.atomic():
            alive = Document.objects.filter(
                pk=document.pk, state=Document.State.INDEXING, job_id=job_id
            )
            if not alive.select_for_update().exists():
                raise _Gone
            Passage.objects.bulk_create(passages, batch_size=500)
            total = len(pages) if document.kind == Document.Kind.PDF else 0
            alive.update(
                state=Document.State.READY,
                pages=total,
                pages_done=document.pages_total or 1,
                tokens=sum(token_estimate(p.text) for p in pages),
                chars=sum(len(p.text) for p in pages),
                finished_at=timezone.now(),
            )
        document.refresh_from_db()
        events.send(ready_frame(document, passages=len(passages)))
        # Ready and searchable by its full text now; its vectors follow on the inference
        # workers when an embedding model is set. A job that cannot be queued is queued by
        # the next question over the document: the document stays ready.
        try:
            # Imported here, where the documents worker first needs it.
            from documents.embeddings import document_embeddings_request

            document_embeddings_request(document_ids=[document.pk])
        except Exception:
            log.warning("Could not queue the embedding of document %s", document_id, exc_info=True)
        return document
    except _Gone:
        log.info("Document %s was deleted or given up while it was read", document_id)
        return None
    except DocumentRefused as exc:
        return _document_fail(document, events, str(exc), job_id=job_id)
    except JobTimeoutException:
        return _document_fail(
            document,
            events,
            f"Reading this file took longer than {time_limit or 0:.0f} s, the "
            "limit; split it into smaller files and upload those.",
            job_id=job_id,
        )
    except Exception as exc:
        log.exception("Indexing document %s failed", document_id)
        return _document_fail(
            document,
            events,
            f"This file could not be read ({type(exc).__name__}); save it again in another "
            "program and upload that.",
            job_id=job_id,
        )
    finally:
        events.flush()


def _document_fail(
    document: Document, events: DocumentEvents | None, error: str, *, job_id: str
) -> Document | None:
    """Fail an active document (only the job that names it, so a stale job changes nothing)."""
    changed = Document.objects.filter(
        pk=document.pk, state__in=Document.ACTIVE, job_id=job_id
    ).update(state=Document.State.FAILED, error=error, finished_at=timezone.now())
    document.refresh_from_db()
    if changed and events is not None:
        events.send(failed_frame(document))
    return document


WORKER_DIED = (
    "The worker reading this file stopped before it finished (it crashed or ran out of "
    "memory); the file may be too complex to read. Try saving it again, or split it."
)


def document_job_died(*, document_id: int, job_id: str, events: DocumentEvents | None) -> None:
    """The horse running this document's job was killed: fail the document at once."""
    document = Document.objects.filter(pk=document_id).first()
    if document is not None:
        _document_fail(document, events, WORKER_DIED, job_id=job_id)


def documents_reap(*, connection: redis.Redis) -> list[Document]:
    """Fail the documents whose indexing job died with its worker (nobody holds their lease),
    and queue again those whose job Redis forgot before it started (the private Redis keeps
    nothing across a restart). Run by the documents worker every few seconds."""
    now = timezone.now()
    changed = []
    for document in Document.objects.filter(state__in=Document.ACTIVE):
        if now - (document.started_at or document.created_at) < REAP_GRACE:
            continue
        try:
            job: Job | None = Job.fetch(document.job_id, connection=connection)
        except NoSuchJobError:
            job = None
        status = job.get_status(refresh=False) if job is not None else None
        if document.state == Document.State.QUEUED:
            if job is None and _document_requeue(document):
                changed.append(document)
            elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                _document_fail(document, None, WORKER_DIED, job_id=document.job_id)
                changed.append(document)
            continue
        if not connection.exists(lease_key(document.pk)):
            _document_fail(document, None, WORKER_DIED, job_id=document.job_id)
            changed.append(document)
    return changed


def _document_requeue(document: Document) -> bool:
    job_id = _new_job_id()
    with transaction.atomic():
        taken = Document.objects.filter(
            pk=document.pk, job_id=document.job_id, state=Document.State.QUEUED
        ).update(job_id=job_id)
        if taken:
            document.job_id = job_id
            _document_enqueue(document)
    return bool(taken)
