"""Downloads from the (stand-in) Hub: verified and registered, refused before they start,
joined, cancelled and resumed, and taken up again after their worker is killed."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import django_rq
import psutil
import pytest
from django.conf import settings
from django.db import connection as db_connection
from django.test import override_settings
from django.utils import timezone
from rq.job import Job

from models_admin.download_events import DownloadEvents
from models_admin.downloads import (
    DownloadRefused,
    download_cancel,
    download_run,
    download_start,
    downloads_revive,
)
from models_admin.fit import disk_room_bytes
from models_admin.models import Download, LocalModel
from models_admin.transfer import lease_key
from tests.hub_server import FakeHub, sha256_of
from tests.models_admin.conftest import (
    GATED_REPO,
    SMOL_FILE,
    SMOL_REPO,
    TINY_FILE,
    TINY_REPO,
    default_model_size,
    start_download_worker,
)
from tests.processes import wait_for
from wizweb.channels_sender import channel_sender
from wizweb.default_model import DEFAULT_MODEL_SHA256
from wizweb.redis_server import redis_connection

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_downloads")]

MB = 1 << 20


def run_here(download: Download) -> Download:
    """Run a download in this process, as the `models download` command does."""
    return download_run(
        download_id=download.pk,
        job_id=download.job_id,
        events=DownloadEvents(channel_sender),
        connection=redis_connection(),
    )


def state_of(download: Download) -> str:
    download.refresh_from_db()
    return download.state


def test_it_downloads_verifies_and_registers_the_model(
    hub: FakeHub, staff: Any, tiny_gguf: Path
) -> None:
    download, created = download_start(
        repo_id=TINY_REPO, filename=TINY_FILE, user=staff, enqueue=False
    )
    assert created
    assert download.state == "queued"
    assert download.total_bytes == tiny_gguf.stat().st_size
    assert download.sha256 == sha256_of(tiny_gguf)
    assert download.requested_by == staff

    done = run_here(download)

    assert done.state == "done", done.error
    assert done.bytes_done == done.total_bytes
    model = done.local_model
    assert model is not None and model.state == "ready"
    assert model.file == f"{TINY_REPO}/{TINY_FILE}"
    assert (model.repo_id, model.repo_file) == (TINY_REPO, TINY_FILE)
    assert model.sha256 == sha256_of(tiny_gguf)
    assert model.metadata["architecture"] == "llama"
    assert model.metadata["context_length"] == 2048
    assert model.path == Path(settings.MODELS_DIR) / TINY_REPO / TINY_FILE
    assert sha256_of(model.path) == sha256_of(tiny_gguf)
    assert not done.part_path.exists()
    assert hub.served_bytes(TINY_REPO, TINY_FILE) == tiny_gguf.stat().st_size


def test_a_checksum_mismatch_fails_the_download_and_deletes_the_file(
    hub: FakeHub, tiny_gguf: Path
) -> None:
    # The Hub publishes a sha256 that these bytes do not have.
    hub.add_file(TINY_REPO, "tampered-Q8_0.gguf", tiny_gguf, sha256="ab" * 32)
    download, _ = download_start(repo_id=TINY_REPO, filename="tampered-Q8_0.gguf", enqueue=False)

    failed = run_here(download)

    assert failed.state == "failed"
    assert "arrived damaged" in failed.error
    assert "abababababab" in failed.error
    assert "The bad file was deleted; download it again." in failed.error
    assert not failed.part_path.exists()
    assert not failed.path.exists()
    assert failed.local_model is None
    assert not LocalModel.objects.filter(file=failed.file).exists()


def test_a_disk_that_fills_up_mid_file_fails_the_download_with_what_to_do(hub: FakeHub) -> None:
    download, _ = download_start(repo_id=TINY_REPO, filename=TINY_FILE, enqueue=False)
    # /dev/full takes no byte: every write fails with ENOSPC, as on a disk that filled up
    # after the download was let in.
    download.part_path.parent.mkdir(parents=True, exist_ok=True)
    download.part_path.symlink_to("/dev/full")

    failed = run_here(download)

    assert failed.state == "failed"
    assert failed.error == (
        f"The models disk filled up while {TINY_FILE} arrived; free some space (delete a model "
        "you no longer use), then ask for it again to resume."
    )
    assert not failed.path.exists()
    assert failed.local_model is None


def test_it_refuses_when_the_disk_lacks_room(hub: FakeHub) -> None:
    room_mb = disk_room_bytes() // MB
    # A reserve that leaves less room than the 4 MB file needs, on the real disk.
    with (
        override_settings(WIZ_DISK_RESERVE_MB=settings.WIZ_DISK_RESERVE_MB + room_mb - 1),
        pytest.raises(DownloadRefused) as refused,
    ):
        download_start(repo_id=TINY_REPO, filename=TINY_FILE, enqueue=False)
    message = str(refused.value)
    assert message.startswith(f"{TINY_FILE} needs 0.00 GB more on the models disk but only")
    assert "free some space or pick a smaller file" in message
    assert not Download.objects.exists()


@pytest.mark.parametrize(
    ("repo_id", "filename"),
    [
        (TINY_REPO, "../../../../etc/passwd.gguf"),
        (TINY_REPO, "/etc/evil.gguf"),
        (TINY_REPO, "sub/../../../evil.gguf"),
        (TINY_REPO, "..\\..\\evil.gguf"),
        (TINY_REPO, "sub//evil.gguf"),
        ("../../etc", TINY_FILE),
        ("wiz-test/..", TINY_FILE),
        ("/wiz-test/Tiny-GGUF", TINY_FILE),
        ("wiz-test/Tiny-GGUF/../..", TINY_FILE),
        ("wiz-test\\Tiny-GGUF", TINY_FILE),
    ],
)
def test_it_refuses_names_that_would_leave_the_models_dir(
    hub: FakeHub, repo_id: str, filename: str
) -> None:
    with pytest.raises(DownloadRefused, match="is not a"):
        download_start(repo_id=repo_id, filename=filename, enqueue=False)
    assert hub.requests == []  # refused before the Hub was asked
    assert not Download.objects.exists()


def test_it_refuses_a_repo_folder_that_is_a_link_out_of_the_models_dir(
    hub: FakeHub, tmp_path: Path
) -> None:
    owner = Path(settings.MODELS_DIR) / "wiz-test"
    owner.mkdir(exist_ok=True)
    (owner / "Tiny-GGUF").symlink_to(tmp_path)
    with pytest.raises(DownloadRefused, match="would be saved outside the models dir"):
        download_start(repo_id=TINY_REPO, filename=TINY_FILE, enqueue=False)
    assert list(tmp_path.iterdir()) == []


def test_it_refuses_files_that_are_not_gguf_or_do_not_exist(hub: FakeHub) -> None:
    cases = [
        (TINY_REPO, "README.md", "main", "README.md is not a GGUF file"),
        ("wiz-test/Nothing-GGUF", TINY_FILE, "main", "There is no repo wiz-test/Nothing-GGUF"),
        (TINY_REPO, "missing-Q4_0.gguf", "main", "has no file 'missing-Q4_0.gguf'"),
        (TINY_REPO, TINY_FILE, "v9", "has no revision 'v9'"),
    ]
    for repo_id, filename, revision, message in cases:
        with pytest.raises(DownloadRefused, match=message):
            download_start(repo_id=repo_id, filename=filename, revision=revision, enqueue=False)
    assert not Download.objects.exists()


def test_a_gated_repo_needs_the_token(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DownloadRefused, match="is a gated repo: accept its terms") as refused:
        download_start(repo_id=GATED_REPO, filename="gated-Q8_0.gguf", enqueue=False)
    assert "HF_TOKEN" in str(refused.value)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    download, _ = download_start(repo_id=GATED_REPO, filename="gated-Q8_0.gguf", enqueue=False)
    assert run_here(download).state == "done"


def test_asking_twice_joins_the_queued_download(hub: FakeHub, staff: Any) -> None:
    first, created = download_start(repo_id=TINY_REPO, filename=TINY_FILE, user=staff)
    second, again = download_start(repo_id=TINY_REPO, filename=TINY_FILE, user=staff)
    assert created and not again
    assert second.pk == first.pk
    assert Download.objects.count() == 1
    assert django_rq.get_queue(settings.DOWNLOAD_QUEUE).job_ids == [first.job_id]


def test_cancelling_a_queued_download_is_immediate(hub: FakeHub) -> None:
    download, _ = download_start(repo_id=TINY_REPO, filename=TINY_FILE)
    assert download_cancel(download=download)
    assert state_of(download) == "cancelled"
    with pytest.raises(DownloadRefused, match="is not running"):
        download_cancel(download=download)


def test_downloads_nobody_fetches_after_a_restart_are_queued_again(hub: FakeHub) -> None:
    download, _ = download_start(repo_id=TINY_REPO, filename=TINY_FILE)
    old_job = download.job_id
    # `serve` stopped mid-download and its private Redis came back empty.
    Job.fetch(old_job, connection=redis_connection()).delete()
    Download.objects.filter(pk=download.pk).update(
        state="running", created_at=timezone.now() - timedelta(minutes=5)
    )
    # A download whose process still holds its lease is left alone.
    redis_connection().set(lease_key(download.pk), "elsewhere", ex=5)
    assert downloads_revive(connection=redis_connection()) == []
    redis_connection().delete(lease_key(download.pk))

    revived = downloads_revive(connection=redis_connection())

    assert [d.pk for d in revived] == [download.pk]
    download.refresh_from_db()
    assert download.state == "queued"
    assert download.job_id != old_job
    assert django_rq.get_queue(settings.DOWNLOAD_QUEUE).job_ids == [download.job_id]
    assert downloads_revive(connection=redis_connection()) == []  # queued: not twice


def test_a_cancel_stops_the_transfer_within_a_second_and_asking_again_resumes(
    hub: FakeHub, staff: Any, download_worker: Any
) -> None:
    total = default_model_size()
    hub.throttle_bytes_per_s = 8 * MB
    download, _ = download_start(repo_id=SMOL_REPO, filename=SMOL_FILE, user=staff)
    wait_for(
        lambda: hub.served_bytes(SMOL_REPO, SMOL_FILE) > 10 * MB,
        timeout=30,
        what="the transfer to be under way",
    )
    download_cancel(download=download)
    time.sleep(1.0)
    served_a_second_later = hub.served_bytes(SMOL_REPO, SMOL_FILE)
    time.sleep(1.0)
    # Stopped within the second: not one more byte left the Hub after it.
    assert hub.served_bytes(SMOL_REPO, SMOL_FILE) == served_a_second_later
    wait_for(lambda: state_of(download) == "cancelled", timeout=5, what="the cancelled state")
    partial = download.part_path.stat().st_size
    assert 0 < partial < total
    assert download.bytes_done == partial
    assert not download.path.exists()

    hub.throttle_bytes_per_s = 0
    served_before = hub.served_bytes(SMOL_REPO, SMOL_FILE)
    resumed, created = download_start(repo_id=SMOL_REPO, filename=SMOL_FILE, user=staff)
    assert created
    wait_for(lambda: state_of(resumed) in ("done", "failed"), timeout=60, what="the resume")

    assert resumed.state == "done", resumed.error
    assert resumed.resumed_from_bytes == partial
    assert hub.ranges[-1] == (f"{SMOL_REPO}/{SMOL_FILE}", f"bytes={partial}-")
    assert hub.served_bytes(SMOL_REPO, SMOL_FILE) - served_before == total - partial
    assert resumed.local_model is not None
    assert resumed.local_model.sha256 == DEFAULT_MODEL_SHA256
    assert sha256_of(resumed.local_model.path) == DEFAULT_MODEL_SHA256


@pytest.mark.stack
def test_it_resumes_after_the_download_worker_is_killed_mid_file(
    hub: FakeHub, staff: Any, clean_downloads: None, log_dir: Path
) -> None:
    total = default_model_size()
    hub.throttle_bytes_per_s = 8 * MB
    doomed = start_download_worker("doomed-downloads", log_dir)
    download, _ = download_start(repo_id=SMOL_REPO, filename=SMOL_FILE, user=staff)
    wait_for(
        lambda: hub.served_bytes(SMOL_REPO, SMOL_FILE) > 10 * MB,
        timeout=30,
        what="the transfer to be under way",
    )
    # The machine loses the worker and its work-horse at once, with no chance to clean up.
    tree = [doomed.process.pid] + [p.pid for p in psutil.Process(doomed.pid).children(True)]
    for pid in tree:
        os.kill(pid, signal.SIGKILL)
    doomed.stop()
    wait_for(lambda: not any(psutil.pid_exists(p) for p in tree), timeout=5, what="the kill")
    partial = download.part_path.stat().st_size
    served_at_kill = hub.served_bytes(SMOL_REPO, SMOL_FILE)
    assert state_of(download) == "running"  # nobody was left to say otherwise
    assert 0 < partial < total

    hub.throttle_bytes_per_s = 0
    survivor = start_download_worker("survivor-downloads", log_dir)
    try:
        wait_for(lambda: state_of(download) in ("done", "failed"), timeout=60, what="the resume")
    finally:
        survivor.stop()

    assert download.state == "done", download.error
    assert download.attempts == 2
    assert download.resumed_from_bytes == partial
    fetched_after = hub.served_bytes(SMOL_REPO, SMOL_FILE) - served_at_kill
    assert fetched_after == total - partial
    assert fetched_after < total
    assert download.local_model is not None
    assert sha256_of(download.local_model.path) == DEFAULT_MODEL_SHA256


@pytest.mark.stack
def test_stopping_the_worker_stops_its_download_at_once_and_the_next_start_resumes(
    hub: FakeHub, staff: Any, clean_downloads: None, log_dir: Path
) -> None:
    """What a restart of `serve` does to a download: supervisord stops the worker (SIGTERM),
    which must not wait for the file to finish, and the new worker takes it up."""
    total = default_model_size()
    hub.throttle_bytes_per_s = 8 * MB
    first = start_download_worker("stopped-downloads", log_dir)
    download, _ = download_start(repo_id=SMOL_REPO, filename=SMOL_FILE, user=staff)
    wait_for(
        lambda: hub.served_bytes(SMOL_REPO, SMOL_FILE) > 10 * MB,
        timeout=30,
        what="the transfer to be under way",
    )
    stopped_at = time.monotonic()
    first.stop(signal.SIGTERM, timeout=10)
    assert time.monotonic() - stopped_at < 5  # not the ten seconds the rest would take
    partial = download.part_path.stat().st_size
    assert 0 < partial < total

    hub.throttle_bytes_per_s = 0
    second = start_download_worker("restarted-downloads", log_dir)
    try:
        wait_for(lambda: state_of(download) in ("done", "failed"), timeout=60, what="the resume")
    finally:
        second.stop()
    assert download.state == "done", download.error
    assert download.resumed_from_bytes == partial
    assert download.local_model is not None
    assert download.local_model.sha256 == DEFAULT_MODEL_SHA256


def test_a_cancel_breaks_a_read_waiting_on_a_stalled_connection(hub: FakeHub) -> None:
    """No chunk arrives to carry the cancel: the watch interrupts the read itself (this test
    runs the download on the main thread, as a work-horse and the command do)."""
    hub.stall_after_bytes = 2 * MB
    download, _ = download_start(repo_id=SMOL_REPO, filename=SMOL_FILE, enqueue=False)
    cancelled_at: list[float] = []

    def cancel_once_stalled() -> None:
        wait_for(
            lambda: hub.served_bytes(SMOL_REPO, SMOL_FILE) >= 2 * MB,
            timeout=30,
            what="the stall",
        )
        time.sleep(0.5)
        cancelled_at.append(time.monotonic())
        try:
            download_cancel(download=Download.objects.get(pk=download.pk))
        finally:
            db_connection.close()  # this thread's own; the test database is dropped at the end

    canceller = threading.Thread(target=cancel_once_stalled)
    canceller.start()
    try:
        ended = run_here(download)
        stopped_after = time.monotonic() - cancelled_at[0]
    finally:
        hub.unstall.set()
        canceller.join()
    assert ended.state == "cancelled"
    # Not the ten seconds of huggingface_hub's read timeout, nor its five retries after it.
    assert stopped_after < 3
    assert ended.bytes_done == ended.part_path.stat().st_size <= 2 * MB
