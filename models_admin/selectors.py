"""Reads for the model-admin page and its socket: models with who holds them, the downloads
to show, the groups and the people to put in them. Changes live in local_models, downloads
and access."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import QuerySet

from inference.presence import WorkerState
from models_admin.loading import load_options_for
from models_admin.models import Download, LocalModel

# How many downloads the page lists, newest first.
RECENT_DOWNLOADS = 20


def model_rows(*, workers: list[WorkerState]) -> list[dict[str, Any]]:
    """Every model with the live workers that hold it and its load options."""
    return [
        {
            "model": model,
            "holders": [w.name for w in workers if model.name in w.models],
            "load": load_options_for(model),
        }
        for model in LocalModel.objects.prefetch_related("groups")
    ]


def downloads_recent(*, limit: int = RECENT_DOWNLOADS) -> QuerySet[Download]:
    return Download.objects.select_related("requested_by", "local_model")[:limit]


def download_rows() -> list[dict[str, Any]]:
    """The recent downloads, newest first; one that a later download of the same file has
    replaced offers no Resume."""
    rows, seen = [], set()
    for download in downloads_recent():
        rows.append({"d": download, "superseded": download.file in seen})
        seen.add(download.file)
    return rows


def downloading_files(*, repo_id: str | None = None) -> set[str]:
    """The files being downloaded now (of one repo, when given)."""
    active = Download.objects.filter(state__in=Download.ACTIVE)
    if repo_id is not None:
        active = active.filter(repo_id=repo_id)
    return set(active.values_list("filename", flat=True))


def download_active(*, repo_id: str, filename: str) -> Download | None:
    return Download.objects.filter(
        repo_id=repo_id, filename=filename, state__in=Download.ACTIVE
    ).first()


def groups_with_members() -> QuerySet[Group]:
    return Group.objects.order_by("name").prefetch_related("user_set", "local_models")


def people() -> QuerySet[Any]:
    """Who may be put in a group: the active accounts."""
    return get_user_model().objects.filter(is_active=True).order_by("username")
