"""Moving one file's bytes from the Hub into a partial file: resumed from what is on disk,
measured (bytes, speed, ETA), and stoppable from another process within a second.

The bytes are fetched by huggingface_hub's own `http_get` (what `hf_hub_download` uses), with a
Range from the partial file's size. We do not call `hf_hub_download` itself: since
huggingface_hub 1.x it downloads into a fresh temporary file per call and deletes it on any
failure, so nothing would be left to resume after a cancel, a killed worker or a restart.

Two Redis keys per download coordinate the processes:
- a lease (`lease_key`), held while a process fetches the download and refreshed every second
  with a five-second expiry, so a killed worker's download is seen as abandoned within seconds;
- a cancel flag (`cancel_key`), set by whoever cancels (the page, the socket, the command).

A watch thread refreshes the lease and polls the flag. When the flag is set the transfer stops
at the next chunk, through the progress hook, before that chunk is written. When no chunk has
come for half a second (a stalled connection) and the transfer runs on the main thread (the
worker's horse, the command line), the watch also sends that thread a signal whose handler
raises once, breaking the read that waits.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import redis
from huggingface_hub import constants
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers

LEASE_TTL = 5
LEASE_EVERY = 1.0
CANCEL_POLL = 0.2
REPORT_EVERY = 0.5
RATE_WINDOW = 3.0
# huggingface_hub reads the response in 10 MB pieces and reports each one: too coarse for a
# live bar and for a cancel within a second on a slow line.
CHUNK_BYTES = 1 << 20
CANCEL_SIGNAL = signal.SIGUSR1
STALLED_AFTER = 0.5  # seconds without a chunk before a cancel interrupts the read by signal


class DownloadCancelled(Exception):
    pass


def lease_key(download_id: int) -> str:
    return f"wiz:download:{download_id}:lease"


def cancel_key(download_id: int) -> str:
    return f"wiz:download:{download_id}:cancel"


def lease_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class ProgressReport:
    bytes: int
    total: int
    bytes_per_s: float
    percent: float
    eta_s: float | None


class Progress:
    """Counts bytes as they arrive and reports at most every REPORT_EVERY seconds (and at the
    end); the speed is over the last few seconds, the bytes that were already on disk excluded."""

    def __init__(
        self,
        *,
        total: int,
        initial: int,
        report: Callable[[ProgressReport], None],
        check: Callable[[], None] = lambda: None,
    ) -> None:
        self.total, self.bytes = total, initial
        self._report, self._check = report, check
        self._samples: deque[tuple[float, int]] = deque([(time.monotonic(), initial)])
        self._last_report = 0.0

    def advance(self, count: int) -> None:
        self.bytes += count
        self._check()
        now = time.monotonic()
        self._samples.append((now, self.bytes))
        while len(self._samples) > 2 and now - self._samples[1][0] > RATE_WINDOW:
            self._samples.popleft()
        if now - self._last_report >= REPORT_EVERY:
            self._last_report = now
            self._report(self.snapshot())

    def snapshot(self) -> ProgressReport:
        (then, then_bytes), (now, now_bytes) = self._samples[0], self._samples[-1]
        rate = (now_bytes - then_bytes) / (now - then) if now > then else 0.0
        left = max(self.total - self.bytes, 0)
        return ProgressReport(
            bytes=self.bytes,
            total=self.total,
            bytes_per_s=round(rate, 1),
            percent=round(100 * self.bytes / self.total, 1) if self.total else 0.0,
            eta_s=round(left / rate, 1) if rate > 0 else None,
        )


class _Bar:
    """What `http_get` takes as its `tqdm_class`: it only calls `update` and the context
    manager, and passes total/initial, which `Progress` already knows."""

    def __init__(self, progress: Progress, **_: Any) -> None:
        self._progress = progress

    def update(self, count: int | float = 1) -> None:
        self._progress.advance(int(count))

    def close(self) -> None:
        pass

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


# The watch whose transfer runs on the main thread and may be interrupted by CANCEL_SIGNAL.
_armed: Watch | None = None
_armed_lock = threading.Lock()
_handler_installed = False


def _on_cancel_signal(signum: int, frame: Any) -> None:
    watch = _armed
    if watch is not None and watch.cancelled.is_set() and not watch.raised:
        watch.raised = True  # once: a second raise could land in the file's close
        raise DownloadCancelled


class Watch:
    """The side thread of one download: keeps its lease and watches its cancel flag."""

    def __init__(self, connection: redis.Redis, download_id: int) -> None:
        self.connection = connection
        self.download_id = download_id
        self.cancelled = threading.Event()
        self.raised = False
        self.last_chunk = time.monotonic()
        self._signalled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="download-watch", daemon=True)

    def acquire(self) -> bool:
        """Take the lease; False when another process is fetching this download."""
        return bool(
            self.connection.set(lease_key(self.download_id), lease_holder(), nx=True, ex=LEASE_TTL)
        )

    def start(self) -> None:
        # A flag set before the start is kept: a cancel that reached a download whose worker
        # then died still holds when the download is taken up again.
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        # Only our own lease: a stale process must not free the lease of the one after it.
        key = lease_key(self.download_id)
        if self.connection.get(key) == lease_holder().encode():
            self.connection.delete(key)

    def check(self) -> None:
        """Called as each chunk arrives, before it is written."""
        self.last_chunk = time.monotonic()
        if self.cancelled.is_set() and not self.raised:
            self.raised = True
            raise DownloadCancelled

    def _run(self) -> None:
        last_lease = time.monotonic()
        while not self._stop.wait(CANCEL_POLL):
            try:
                if time.monotonic() - last_lease >= LEASE_EVERY:
                    self.connection.set(lease_key(self.download_id), lease_holder(), ex=LEASE_TTL)
                    last_lease = time.monotonic()
                if not self.cancelled.is_set() and self.connection.exists(
                    cancel_key(self.download_id)
                ):
                    self.cancelled.set()
                if self.cancelled.is_set():
                    self._interrupt_if_stalled()
            except redis.RedisError:
                pass  # retried at the next tick; the lease outlives a few missed ones

    def _interrupt_if_stalled(self) -> None:
        if self._signalled or time.monotonic() - self.last_chunk < STALLED_AFTER:
            return
        with _armed_lock:
            if _armed is self and not self.raised:
                self._signalled = True
                signal.pthread_kill(threading.main_thread().ident or 0, CANCEL_SIGNAL)


def _on_interrupt(signum: int, frame: Any) -> None:
    watch = _armed
    if watch is not None and not watch.cancelled.is_set():
        # As a cancel from the page: the transfer stops at its next chunk (or its stalled read
        # is interrupted), at a safe point, instead of wherever KeyboardInterrupt would land.
        watch.cancelled.set()
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_cancels_transfer() -> Iterator[None]:
    """Within it, Ctrl-C (SIGINT) cancels a running transfer of this process's main thread, and
    a second Ctrl-C, or one outside a transfer, is a KeyboardInterrupt as usual."""
    previous = signal.signal(signal.SIGINT, _on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Interruptible:
    """While active, the cancel signal raises DownloadCancelled in the main thread. The handler
    stays installed for the life of the process (it does nothing when nothing is armed): putting
    the old one back could let a late signal fall on the default action, which ends the process."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch

    def __enter__(self) -> None:
        global _armed, _handler_installed
        if threading.current_thread() is not threading.main_thread():
            return  # only the progress hook can stop a transfer on another thread
        with _armed_lock:
            if not _handler_installed:
                signal.signal(CANCEL_SIGNAL, _on_cancel_signal)
                _handler_installed = True
            _armed = self.watch
        self.watch.check()

    def __exit__(self, *exc: object) -> None:
        global _armed
        with _armed_lock:
            if _armed is self.watch:
                _armed = None


def transfer_fetch(
    *,
    url: str,
    part_path: Path,
    total: int,
    watch: Watch,
    report: Callable[[ProgressReport], None],
) -> ProgressReport:
    """Append the rest of the file at `url` to `part_path` (whatever it already holds is the
    start of the file); returns the final progress. Raises DownloadCancelled when cancelled, and
    huggingface_hub's or the OS's errors when the transfer fails; the partial file stays."""
    constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, CHUNK_BYTES)
    part_path.parent.mkdir(parents=True, exist_ok=True)
    have = part_path.stat().st_size if part_path.exists() else 0
    progress = Progress(total=total, initial=have, report=report, check=watch.check)
    if have < total:
        with part_path.open("ab") as handle, _Interruptible(watch):
            http_get(
                url,
                cast(BinaryIO, handle),
                resume_size=have,
                headers=build_hf_headers(),
                expected_size=total,
                tqdm_class=cast(Any, functools.partial(_Bar, progress)),
            )
    final = progress.snapshot()
    report(final)
    return final
