"""Jobs that run on an inference worker's control queue (see models_admin.worker_control).

Each tells the model-admin pages how it ended (`worker.loaded`, `worker.unloaded`,
`worker.load_failed`, docs/protocol.md): the page that asked only knows it was queued, and a load
that fails on the worker (a file gone, llama.cpp refusing it) would otherwise go unseen."""

from __future__ import annotations

from typing import Literal, TypedDict

from rq import get_current_job

from inference.presence import MODELS_GROUP
from inference.runtime import ModelLoadError, runtime
from models_admin.download_events import models_group_message
from models_admin.loading import model_spec
from models_admin.models import LocalModel
from wizweb.channels_sender import ChannelSender, channel_sender

WorkerModelEvent = Literal["worker.loaded", "worker.unloaded", "worker.load_failed"]


class WorkerModelFrame(TypedDict):
    type: WorkerModelEvent
    worker: str
    model: int
    name: str
    n_ctx: int  # the context it was loaded with (worker.loaded), else 0
    error: str  # what went wrong and what to do (worker.load_failed), else empty


def _tell(
    sender: ChannelSender,
    kind: WorkerModelEvent,
    model: LocalModel,
    *,
    n_ctx: int = 0,
    error: str = "",
) -> None:
    job = get_current_job()
    frame: WorkerModelFrame = {
        "type": kind,
        "worker": job.worker_name if job is not None and job.worker_name else "",
        "model": model.pk,
        "name": model.name,
        "n_ctx": n_ctx,
        "error": error,
    }
    sender.send(MODELS_GROUP, models_group_message(frame))
    sender.flush()


def control_load(model_id: int, *, sender: ChannelSender = channel_sender) -> str:
    """Job, on the worker: load the model now (a no-op if it holds it with these options)."""
    model = LocalModel.objects.get(pk=model_id)
    try:
        engine = runtime.load(model_spec(model))
    except ModelLoadError as exc:
        _tell(sender, "worker.load_failed", model, error=str(exc))
        raise
    _tell(sender, "worker.loaded", model, n_ctx=engine.n_ctx)
    return f"loaded {model.name}"


def control_unload(model_id: int, *, sender: ChannelSender = channel_sender) -> str:
    model = LocalModel.objects.get(pk=model_id)
    held = runtime.unload(str(model.path))  # once the answers it is writing have ended
    _tell(sender, "worker.unloaded", model)
    return f"unloaded {model.name}" if held else f"{model.name} was not loaded"
