"""The download events of `/ws/models/` (docs/protocol.md): their shapes, and the one helper that
sends them from a download's process to the model-admin pages."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from inference.presence import MODELS_GROUP, WorkerState
from models_admin import selectors
from models_admin.models import Download
from models_admin.transfer import ProgressReport
from wizweb.channels_sender import ChannelSender, channel_sender


class ProgressFrame(TypedDict):
    type: Literal["download.progress"]
    download: int
    bytes: int
    total: int
    bytes_per_s: float
    percent: float
    eta_s: float | None


class DoneFrame(TypedDict):
    type: Literal["download.done"]
    download: int
    model: int
    name: str


class FailedFrame(TypedDict):
    type: Literal["download.failed"]
    download: int
    error: str


class CancelledFrame(TypedDict):
    type: Literal["download.cancelled"]
    download: int
    bytes: int


def progress_frame(download: Download, report: ProgressReport) -> ProgressFrame:
    return {
        "type": "download.progress",
        "download": download.pk,
        "bytes": report.bytes,
        "total": report.total,
        "bytes_per_s": report.bytes_per_s,
        "percent": report.percent,
        "eta_s": report.eta_s,
    }


def done_frame(download: Download) -> DoneFrame:
    assert download.local_model is not None
    return {
        "type": "download.done",
        "download": download.pk,
        "model": download.local_model.pk,
        "name": download.local_model.name,
    }


def failed_frame(download: Download) -> FailedFrame:
    return {"type": "download.failed", "download": download.pk, "error": download.error}


def cancelled_frame(download: Download) -> CancelledFrame:
    return {"type": "download.cancelled", "download": download.pk, "bytes": download.bytes_done}


def download_state_frames(*, limit: int = 20) -> list[Any]:
    """The state of the most recent downloads as frames, for a page that has just connected:
    whatever happened between its render and its socket is told again."""
    frames: list[Any] = []
    for download in selectors.downloads_recent(limit=limit):
        if download.is_active:
            report = ProgressReport(
                bytes=download.bytes_done,
                total=download.total_bytes,
                bytes_per_s=0.0,
                percent=download.percent,
                eta_s=None,
            )
            frames.append(progress_frame(download, report))
        elif download.state == Download.State.DONE and download.local_model is not None:
            frames.append(done_frame(download))
        elif download.state == Download.State.FAILED:
            frames.append(failed_frame(download))
        elif download.state == Download.State.CANCELLED:
            frames.append(cancelled_frame(download))
    return frames


def models_group_message(frame: Any) -> dict[str, Any]:
    """The channel-layer message that ModelsConsumer.models_event turns into the frame."""
    return {"type": "models.event", "event": dict(frame)}


def worker_state_announce(state: WorkerState) -> None:
    """An inference worker's state, every second, to the model-admin pages (a worker hook)."""
    channel_sender.send(MODELS_GROUP, models_group_message(state.as_frame()))


class DownloadEvents:
    """Sends one download's events to the model-admin pages through a ChannelSender (from a
    worker's horse or the command line; the web process sends through its own loop)."""

    def __init__(self, sender: ChannelSender) -> None:
        self.sender = sender

    def send(self, frame: Any) -> None:
        self.sender.send(MODELS_GROUP, models_group_message(frame))

    def flush(self) -> None:
        self.sender.flush()
