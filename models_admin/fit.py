"""Whether a file on the Hub fits here, as numbers: room on the models disk (less the reserve of
WIZ_DISK_RESERVE_MB and less what a partial file already holds), and memory on each live
inference worker once loaded (the same estimate the workers use: weights, an f16 KV cache for
the context it would load with, and overhead)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from inference.presence import WorkerState
from models_admin.gguf_metadata import NotGGUF, gguf_read_header_prefix
from models_admin.hub import HubError, HubFile, HubRepo, hub_file_prefix
from models_admin.loading import load_options_for, model_memory_estimate
from models_admin.models import LocalModel

GIB = 1 << 30


def gib(size: int) -> str:
    return f"{size / GIB:.2f} GB"


def disk_room_bytes() -> int:
    """What a download may still write to the models disk, the reserve kept."""
    free = shutil.disk_usage(Path(settings.MODELS_DIR)).free
    return free - (int(settings.WIZ_DISK_RESERVE_MB) << 20)


def disk_shortfall(*, name: str, need_bytes: int) -> str | None:
    """The refusal, as a sentence, when `need_bytes` more would not fit; None when they do."""
    room = disk_room_bytes()
    if need_bytes <= room:
        return None
    return (
        f"{name} needs {gib(need_bytes)} more on the models disk but only {gib(max(room, 0))} "
        f"is free (keeping {settings.WIZ_DISK_RESERVE_MB} MB in reserve); free some space "
        "or pick a smaller file."
    )


@dataclass(frozen=True)
class WorkerFit:
    worker: str
    free_bytes: int
    fits: bool


@dataclass
class FileFit:
    file: HubFile
    disk_need_bytes: int  # the size less what a partial file already holds
    disk_room_bytes: int
    memory_bytes: int
    n_ctx: int
    kv_known: bool  # False: the header could not be read, so the estimate is weights only
    workers: list[WorkerFit] = field(default_factory=list)
    partial_bytes: int = 0  # already on disk from an earlier attempt
    on_disk: bool = False  # the complete file is here already
    downloading: bool = False  # a download of it is queued or running

    @property
    def fits_disk(self) -> bool:
        return self.disk_need_bytes <= self.disk_room_bytes


def worker_free_bytes(state: WorkerState) -> int:
    """What a worker can still take: its budget less what it holds, capped by the host's free
    memory (the same figure `worker_model_load` checks)."""
    return min(state.memory_budget_bytes - state.memory_used_bytes, state.host_available_bytes)


def file_fit(
    *,
    hub_file: HubFile,
    header: dict[str, Any],
    workers: list[WorkerState],
    partial_bytes: int = 0,
    room: int | None = None,
) -> FileFit:
    """The numbers for one file. `header` holds the shape facts of the repo's GGUF header
    (the same for every quantisation of one model)."""
    candidate = LocalModel(size_bytes=hub_file.size, metadata=header)
    n_ctx = load_options_for(candidate).n_ctx
    need = model_memory_estimate(candidate, n_ctx)
    return FileFit(
        file=hub_file,
        disk_need_bytes=max(hub_file.size - partial_bytes, 0),
        partial_bytes=partial_bytes,
        disk_room_bytes=disk_room_bytes() if room is None else room,
        memory_bytes=need,
        n_ctx=n_ctx,
        kv_known=bool(header.get("block_count")),
        workers=[
            WorkerFit(
                worker=w.name, free_bytes=worker_free_bytes(w), fits=need <= worker_free_bytes(w)
            )
            for w in workers
        ],
    )


def repo_shape(repo: HubRepo) -> dict[str, Any]:
    """The shape facts of a repo's model, from the header of its smallest GGUF file; {} when
    it cannot be read (the estimates are then the weights alone)."""
    if not repo.files:
        return {}
    smallest = min(repo.files, key=lambda f: f.size)
    try:
        prefix = hub_file_prefix(repo_id=repo.repo_id, filename=smallest.path, commit=repo.commit)
        return gguf_read_header_prefix(prefix)
    except (HubError, NotGGUF):
        return {}


def repo_fits(*, repo: HubRepo, workers: list[WorkerState]) -> list[FileFit]:
    """The numbers for every GGUF file of a repo, counting what is already on disk."""
    header = repo_shape(repo)
    room = disk_room_bytes()
    models_dir = Path(settings.MODELS_DIR)
    fits = []
    for hub_file in repo.files:
        local = models_dir / repo.repo_id / hub_file.path
        part = local.with_name(local.name + ".incomplete")
        fit = file_fit(
            hub_file=hub_file,
            header=header,
            workers=workers,
            partial_bytes=part.stat().st_size if part.exists() else 0,
            room=room,
        )
        fit.on_disk = local.exists()
        fits.append(fit)
    return fits
