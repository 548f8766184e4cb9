"""Downloads from the Hub: starting, joining, cancelling and reviving them, and running one
(fetch, resume, verify, register). The download's own state changes are methods of
`Download` (models_admin.models)."""

from __future__ import annotations

import errno
import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import django_rq
import redis
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from huggingface_hub.errors import HfHubHTTPError
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from models_admin import selectors
from models_admin.download_events import (
    DownloadEvents,
    cancelled_frame,
    done_frame,
    failed_frame,
    progress_frame,
)
from models_admin.fit import disk_shortfall
from models_admin.hub import HubError, hub_file_check, hub_file_url, hub_repo
from models_admin.local_models import localmodel_register
from models_admin.models import Download, LocalModel
from models_admin.transfer import (
    DownloadCancelled,
    ProgressReport,
    Watch,
    cancel_key,
    lease_key,
    transfer_fetch,
)
from wizweb.default_model import (
    file_sha256,
)
from wizweb.redis_server import redis_connection

log = logging.getLogger(__name__)

REVIVE_GRACE = timedelta(seconds=3)
MAX_ATTEMPTS = 10
SAVE_EVERY = 2.0
DOWNLOAD_JOB = "models_admin.download_jobs.download_job"
# A long file on a slow line: a day, not the queue's default hour.
DOWNLOAD_JOB_TIMEOUT = 24 * 3600
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")


class DownloadRefused(Exception):
    """A download that will not start, with the reason as a sentence."""


class DownloadFailed(Exception):
    pass


def download_names_check(*, repo_id: str, filename: str, revision: str) -> Path:
    """Refuse names that could reach outside the models dir; returns where the file would go.

    The file lands at `<models dir>/<repo_id>/<filename>`, so both names become path parts."""
    if not REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise DownloadRefused(
            f"{repo_id!r} is not a Hub repo name (owner/name, letters, digits, '-', '_', '.')."
        )
    parts = filename.split("/")
    if (
        not filename
        or len(filename) > 400
        or "\\" in filename
        or filename.startswith("/")
        or any(part in ("", ".", "..") for part in parts)
        or any(ord(c) < 32 for c in filename)
    ):
        raise DownloadRefused(
            f"{filename!r} is not a file name inside a repo: it may not be absolute, hold '..', "
            "empty parts or backslashes."
        )
    if not REVISION.fullmatch(revision) or ".." in revision:
        raise DownloadRefused(f"{revision!r} is not a revision (a branch, tag or commit).")
    if not filename.lower().endswith(".gguf"):
        raise DownloadRefused(
            f"{filename} is not a GGUF file; Wiz Web runs only .gguf models (llama.cpp's format)."
        )
    models_dir = Path(settings.MODELS_DIR).resolve()
    target = (models_dir / repo_id / filename).resolve()
    if not target.is_relative_to(models_dir) or target == models_dir:
        raise DownloadRefused(f"{repo_id}/{filename} would be saved outside the models dir.")
    return target


def _download_enqueue(download: Download) -> None:
    job_id, pk = download.job_id, download.pk

    def enqueue() -> None:
        django_rq.get_queue(settings.DOWNLOAD_QUEUE).enqueue(
            DOWNLOAD_JOB, pk, job_id=job_id, job_timeout=DOWNLOAD_JOB_TIMEOUT
        )

    transaction.on_commit(enqueue)


def _new_job_id() -> str:
    return f"download-{uuid.uuid4().hex}"


def download_start(
    *,
    repo_id: str,
    filename: str,
    revision: str = "main",
    user: AbstractBaseUser | AnonymousUser | None = None,
    enqueue: bool = True,
) -> tuple[Download, bool]:
    """Ask for a file from the Hub. Returns the download and whether it is new: asking for a
    file that is already queued or running joins that download (and takes it up again if its
    worker died). Refused with DownloadRefused before anything starts when a name would leave
    the models dir, the file is not .gguf, the repo or file does not exist or may not be read,
    the Hub publishes no sha256 for it, it is already here, or the disk lacks the room.

    `enqueue=False` leaves the running to the caller (the `models download` command)."""
    repo_id, filename, revision = repo_id.strip(), filename.strip(), revision.strip() or "main"
    target = download_names_check(repo_id=repo_id, filename=filename, revision=revision)
    joined = download_join(repo_id=repo_id, filename=filename)
    if joined is not None:
        return joined, False
    relative = str(target.relative_to(Path(settings.MODELS_DIR).resolve()))
    existing = LocalModel.objects.filter(file=relative).first()
    if existing is not None and target.exists():
        raise DownloadRefused(
            f"{filename} is already here as the model {existing.name}; delete it first to "
            "download it again."
        )
    try:
        repo = hub_repo(repo_id=repo_id, revision=revision)
        hub_file = repo.file(filename)
        if hub_file is None:
            raise DownloadRefused(f"{repo_id} has no file {filename!r} at {revision}.")
        if not hub_file.sha256:
            raise DownloadRefused(
                f"The Hub publishes no sha256 for {filename}, so it could not be verified."
            )
        hub_file_check(repo_id=repo_id, filename=filename, commit=repo.commit)
    except HubError as exc:
        raise DownloadRefused(str(exc)) from exc
    part = target.with_name(target.name + ".incomplete")
    have = part.stat().st_size if part.exists() else 0
    shortfall = disk_shortfall(name=filename, need_bytes=max(hub_file.size - have, 0))
    if shortfall:
        raise DownloadRefused(shortfall)
    user_id = user.pk if user is not None and user.is_authenticated else None
    try:
        with transaction.atomic():
            download = Download.objects.create(
                repo_id=repo_id,
                filename=filename,
                revision=revision,
                commit=repo.commit,
                sha256=hub_file.sha256,
                total_bytes=hub_file.size,
                bytes_done=have,
                resumed_from_bytes=have,
                requested_by_id=user_id,
                job_id=_new_job_id() if enqueue else f"cli-{uuid.uuid4().hex}",
            )
            if enqueue:
                _download_enqueue(download)
    except IntegrityError:  # asked for twice at the same moment: one active row per file
        joined = download_join(repo_id=repo_id, filename=filename)
        if joined is None:
            raise
        return joined, False
    return download, True


def download_join(*, repo_id: str, filename: str) -> Download | None:
    """The active download of this file, taken up again if nobody is fetching it."""
    active = selectors.download_active(repo_id=repo_id, filename=filename)
    if active is None:
        return None
    if _download_orphaned(active, redis_connection()):
        _download_revive(active)
        active.refresh_from_db()
    return active


def _download_orphaned(download: Download, connection: redis.Redis) -> bool:
    """An active download that no process fetches and no queue holds."""
    if connection.exists(lease_key(download.pk)):
        return False
    now = timezone.now()
    if now - download.created_at < REVIVE_GRACE:
        return False
    if download.job_id.startswith("cli-"):
        return True  # the command that ran it has let go of its lease: it is gone
    try:
        job = Job.fetch(download.job_id, connection=connection)
    except NoSuchJobError:
        return True  # Redis lost it (a restart of serve) or it expired
    status = job.get_status(refresh=False)
    if status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
        return False
    if status == JobStatus.STARTED and job.started_at is not None:
        return now - job.started_at.replace(tzinfo=now.tzinfo) > REVIVE_GRACE
    return True


def _download_revive(download: Download) -> bool:
    """Queue an orphaned download again; it resumes from its partial file. The compare-and-set
    on the job id lets only one of several revivers win."""
    with transaction.atomic():
        taken = download.requeue(job_id=_new_job_id())
        if taken:
            _download_enqueue(download)
    if taken:
        log.info("Download %s: no process was fetching it; queued again", download.pk)
    return taken


def downloads_revive(*, connection: redis.Redis) -> list[Download]:
    """Queue again every active download that nobody fetches: its worker was killed, or
    `serve` restarted and its Redis forgot the queue. Run by the download worker every few
    seconds (models_admin.download_worker)."""
    revived = []
    for download in Download.objects.filter(state__in=Download.ACTIVE):
        if _download_orphaned(download, connection) and _download_revive(download):
            revived.append(download)
    return revived


def download_cancel(*, download: Download, connection: redis.Redis | None = None) -> bool:
    """Stop a download, keeping its partial file for a later resume. A queued one (or one
    that nobody is fetching) is cancelled here and True is returned; a running one is told
    through its cancel flag, and its process stops it within a second and says so."""
    connection = connection or redis_connection()
    download.refresh_from_db()
    if not download.is_active:
        raise DownloadRefused(
            f"The download of {download.filename} is not running ({download.state})."
        )
    connection.set(cancel_key(download.pk), "1", ex=3600)
    if download.state == Download.State.QUEUED and download.finish(
        Download.State.CANCELLED, states=(Download.State.QUEUED,)
    ):
        return True
    # Running (or it just started): its process sees the flag, unless there is none.
    if not connection.exists(lease_key(download.pk)):
        return download.finish(Download.State.CANCELLED, states=Download.ACTIVE)
    return False


def _failure_message(download: Download, exc: Exception) -> str:
    if isinstance(exc, DownloadFailed):
        return str(exc)
    if isinstance(exc, HfHubHTTPError):
        return (
            f"The Hub refused the transfer of {download.filename} ({exc.response.status_code}); "
            "ask for it again later to resume."
        )
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return (
            f"The models disk filled up while {download.filename} arrived; free some space "
            "(delete a model you no longer use), then ask for it again to resume."
        )
    if isinstance(exc, OSError):
        return (
            f"The transfer of {download.filename} broke off ({exc}); ask for it again to "
            "resume from what is on disk."
        )
    return f"The download of {download.filename} failed ({type(exc).__name__}: {exc})."


def download_run(
    *,
    download_id: int,
    job_id: str,
    events: DownloadEvents,
    connection: redis.Redis,
    on_progress: Callable[[ProgressReport], None] | None = None,
) -> Download:
    """Fetch a download's file (on the download worker, or in the `models download` command):
    resume from the partial file, report progress, verify the sha256, register the model.

    Only the process holding the download's lease runs it, and only while the download is
    active and still names `job_id` (a job made stale by a revive does nothing)."""
    watch = Watch(connection, download_id)
    if not watch.acquire():
        log.info("Download %s is being fetched by another process", download_id)
        return Download.objects.get(pk=download_id)
    try:
        download = Download.objects.get(pk=download_id)
        if not download.start(job_id=job_id):
            return download
        if download.attempts > MAX_ATTEMPTS:
            download.error = (
                f"The download of {download.filename} was interrupted {MAX_ATTEMPTS} times; "
                "ask for it again to resume from what is on disk."
            )
            download.finish(Download.State.FAILED, error=download.error)
            events.send(failed_frame(download))
            return download
        watch.start()
        try:
            _download_fetch(download, watch=watch, events=events, on_progress=on_progress)
        except (DownloadCancelled, KeyboardInterrupt) as exc:
            if download.finish(Download.State.CANCELLED):
                events.send(cancelled_frame(download))
            if isinstance(exc, KeyboardInterrupt):
                raise
        except Exception as exc:
            log.warning("Download %s failed", download_id, exc_info=True)
            if download.finish(Download.State.FAILED, error=_failure_message(download, exc)):
                events.send(failed_frame(download))
        return download
    finally:
        watch.stop()
        events.flush()


def _download_fetch(
    download: Download,
    *,
    watch: Watch,
    events: DownloadEvents,
    on_progress: Callable[[ProgressReport], None] | None,
) -> None:
    part = download.part_path
    have = part.stat().st_size if part.exists() else 0
    if have > download.total_bytes:  # not a start of this file: begin again
        part.unlink()
        have = 0
    shortfall = disk_shortfall(name=download.filename, need_bytes=download.total_bytes - have)
    if shortfall:
        raise DownloadFailed(shortfall)
    Download.objects.filter(pk=download.pk).update(resumed_from_bytes=have, bytes_done=have)
    last_save = time.monotonic()

    def report(progress: ProgressReport) -> None:
        nonlocal last_save
        events.send(progress_frame(download, progress))
        if on_progress is not None:
            on_progress(progress)
        if time.monotonic() - last_save >= SAVE_EVERY:
            last_save = time.monotonic()
            Download.objects.filter(pk=download.pk).update(bytes_done=progress.bytes)

    final = transfer_fetch(
        url=hub_file_url(
            repo_id=download.repo_id, filename=download.filename, commit=download.commit
        ),
        part_path=part,
        total=download.total_bytes,
        watch=watch,
        report=report,
    )
    Download.objects.filter(pk=download.pk).update(bytes_done=final.bytes)
    actual = file_sha256(part)
    if actual != download.sha256:
        part.unlink(missing_ok=True)
        raise DownloadFailed(
            f"{download.filename} arrived damaged: its sha256 is {actual[:12]}… but the Hub "
            f"publishes {download.sha256[:12]}…. The bad file was deleted; download it again."
        )
    part.replace(download.path)
    model = localmodel_register(
        path=download.path,
        name=Path(download.filename).stem,
        sha256=actual,
        repo_id=download.repo_id,
        repo_file=download.filename,
    )
    if download.finish(Download.State.DONE, local_model=model, bytes_done=final.bytes):
        events.send(done_frame(download))
