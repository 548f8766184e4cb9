"""Local models: registering GGUF files, scanning the models dir, the default model, deleting."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from inference.presence import worker_states
from models_admin.gguf_metadata import NotGGUF, gguf_read_metadata
from models_admin.models import LocalModel
from wizweb.default_model import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_SHA256,
    default_model_path,
    file_sha256,
)
from wizweb.redis_server import redis_connection

log = logging.getLogger(__name__)


@transaction.atomic
def localmodel_register(
    *,
    path: Path,
    name: str = "",
    sha256: str = "",
    make_default: bool = False,
    repo_id: str = "",
    repo_file: str = "",
) -> LocalModel:
    """Create or refresh the row of a GGUF file under the models dir, reading its header."""
    models_dir = Path(settings.MODELS_DIR).resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(models_dir):
        raise ValueError(f"{path} is outside the models dir {models_dir}.")
    metadata = gguf_read_metadata(resolved)
    file = str(resolved.relative_to(models_dir))
    defaults: dict[str, Any] = {
        "name": _unique_name(name or metadata["name"] or resolved.stem, file=file),
        "size_bytes": resolved.stat().st_size,
        "sha256": sha256 or file_sha256(resolved),
        "metadata": metadata,
        "state": LocalModel.State.READY,
        "error": "",
    }
    if repo_id:
        defaults.update(repo_id=repo_id, repo_file=repo_file)
    model, _ = LocalModel.objects.update_or_create(file=file, defaults=defaults)
    if make_default or not LocalModel.objects.filter(is_default=True).exists():
        localmodel_set_default(model=model)
    return model


def _unique_name(name: str, *, file: str) -> str:
    """Workers and the chat page know models by name: a second file must not take a name that
    another file has (two quantisations of one model share their header's name)."""
    taken = LocalModel.objects.exclude(file=file).filter(name=name).exists()
    return f"{name} ({Path(file).stem})" if taken else name


@transaction.atomic
def localmodel_set_default(*, model: LocalModel) -> None:
    LocalModel.objects.filter(is_default=True).exclude(pk=model.pk).update(is_default=False)
    if not model.is_default:
        model.is_default = True
        model.save(update_fields=["is_default"])


def localmodel_register_default() -> LocalModel:
    """Register the shipped default model (already fetched into the models dir)."""
    path = default_model_path(Path(settings.MODELS_DIR))
    existing = LocalModel.objects.filter(file=path.name).first()
    if existing is not None and existing.state == LocalModel.State.READY:
        return existing
    return localmodel_register(path=path, name=DEFAULT_MODEL_NAME, sha256=DEFAULT_MODEL_SHA256)


class ModelInUse(Exception):
    pass


def localmodel_holders(model: LocalModel) -> list[str]:
    """The live workers that hold the model in memory."""
    return [s.name for s in worker_states(redis_connection()) if model.name in s.models]


def localmodel_delete(*, model: LocalModel) -> None:
    """Delete a model's file and row; refused while a worker holds it."""
    holders = localmodel_holders(model)
    if holders:
        raise ModelInUse(f"{model.name} is loaded on {', '.join(holders)}; unload it there first.")
    model.path.unlink(missing_ok=True)
    was_default = model.is_default
    model.delete()
    if was_default:
        successor = LocalModel.objects.filter(state=LocalModel.State.READY).first()
        if successor is not None:
            localmodel_set_default(model=successor)


# Local files


@dataclass
class ScanReport:
    added: list[LocalModel] = field(default_factory=list)
    missing: list[LocalModel] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, why)


def localmodel_scan(*, add_only: bool = False) -> ScanReport:
    """Register the GGUF files in the models dir that have no row yet, and mark failed the rows
    whose file is gone. Hidden folders (a fetch in progress) and partial downloads are skipped.

    `add_only` leaves the rows without a file here alone: on a worker machine, which shares the
    database but holds other files, the server's models are not gone."""
    models_dir = Path(settings.MODELS_DIR).resolve()
    report = ScanReport()
    known = set(LocalModel.objects.values_list("file", flat=True))
    for path in sorted(models_dir.rglob("*.gguf")):
        relative = path.relative_to(models_dir)
        if str(relative) in known or any(p.startswith(".") for p in relative.parts):
            continue
        if not path.is_file():
            continue
        try:
            report.added.append(localmodel_register(path=path))
        except (NotGGUF, ValueError, OSError) as exc:
            report.unreadable.append((str(relative), str(exc)))
    if add_only:
        return report
    for model in LocalModel.objects.filter(state=LocalModel.State.READY):
        if not model.path.exists():
            model.state = LocalModel.State.FAILED
            model.error = f"The file {model.file} is missing from the models dir."
            model.save(update_fields=["state", "error"])
            report.missing.append(model)
    return report


# Downloads

# A download is taken up again when no process holds its lease, unless its job is still waiting
# in the queue, or it was queued or started so recently that its process may not have taken the
