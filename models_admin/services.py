"""Registering local model files and choosing the default model."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction

from models_admin.gguf_metadata import gguf_read_metadata
from models_admin.models import LocalModel
from models_admin.workers import worker_states
from wizweb.default_model import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_SHA256,
    default_model_path,
    file_sha256,
)
from wizweb.redis_server import redis_connection


@transaction.atomic
def localmodel_register(
    *, path: Path, name: str = "", sha256: str = "", make_default: bool = False
) -> LocalModel:
    """Create or refresh the row of a GGUF file under the models dir, reading its header."""
    models_dir = Path(settings.MODELS_DIR).resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(models_dir):
        raise ValueError(f"{path} is outside the models dir {models_dir}.")
    metadata = gguf_read_metadata(resolved)
    model, _ = LocalModel.objects.update_or_create(
        file=str(resolved.relative_to(models_dir)),
        defaults={
            "name": name or metadata["name"] or resolved.stem,
            "size_bytes": resolved.stat().st_size,
            "sha256": sha256 or file_sha256(resolved),
            "metadata": metadata,
            "state": LocalModel.State.READY,
            "error": "",
        },
    )
    if make_default or not LocalModel.objects.filter(is_default=True).exists():
        localmodel_set_default(model=model)
    return model


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
