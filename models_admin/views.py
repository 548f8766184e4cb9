"""The model-admin page, `/models/` (staff only): the models on disk, the workers, the Hub
(search, a repo's files with whether they fit), and the downloads."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import quote

from django.contrib import messages
from django.contrib.auth.models import Group
from django.contrib.messages.constants import DEFAULT_TAGS
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from inference.presence import worker_states
from models_admin import selectors
from models_admin.access import GroupRefused, group_save, localmodel_set_groups
from models_admin.downloads import DownloadRefused, download_cancel, download_start
from models_admin.fit import FileFit, disk_room_bytes, repo_fits
from models_admin.hub import HubError, HubModel, HubRepo, hub_repo, hub_search
from models_admin.local_models import (
    ModelInUse,
    localmodel_delete,
    localmodel_scan,
    localmodel_set_default,
)
from models_admin.models import Download, LocalModel
from models_admin.worker_control import (
    LOAD_OPTION_LIMITS,
    WorkerControlError,
    worker_model_load,
    worker_model_unload,
)
from wizweb.redis_server import redis_connection


def staff_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_staff:
            return render(
                request, "403.html", {"reason": "The model admin is for staff only."}, status=403
            )
        return view(request, *args, **kwargs)

    return wrapper


@require_GET
@staff_only
def models_page(request: HttpRequest) -> HttpResponse:
    workers = worker_states(redis_connection())
    query = request.GET.get("q", "").strip()
    repo_id = request.GET.get("repo", "").strip()
    revision = request.GET.get("revision", "").strip() or "main"
    found: list[HubModel] = []
    repo: HubRepo | None = None
    fits: list[FileFit] = []
    hub_error = ""
    try:
        if query:
            found = hub_search(query=query)
        if repo_id:
            repo = hub_repo(repo_id=repo_id, revision=revision)
            fits = repo_fits(repo=repo, workers=workers)
            active = selectors.downloading_files(repo_id=repo.repo_id)
            for fit in fits:
                fit.downloading = fit.file.path in active
    except HubError as exc:
        hub_error = str(exc)
    return render(
        request,
        "models_admin/models.html",
        {
            "rows": selectors.model_rows(workers=workers),
            "workers": workers,
            "load_limits": LOAD_OPTION_LIMITS,
            "groups": selectors.groups_with_members(),
            "users": selectors.people(),
            "query": query,
            "found": found,
            "repo_id": repo_id,
            "revision": revision,
            "repo": repo,
            "fits": fits,
            "hub_error": hub_error,
            "disk_room_bytes": max(disk_room_bytes(), 0),
            "downloads": selectors.download_rows(),
            "active_files": selectors.downloading_files(),
        },
    )


def _back(request: HttpRequest) -> HttpResponse:
    """Back to the page as it was (its search and open repo), at the downloads."""
    repo_id = request.POST.get("back_repo", "")
    query = request.POST.get("back_q", "")
    params = "&".join(
        f"{key}={quote(value)}" for key, value in (("q", query), ("repo", repo_id)) if value
    )
    return redirect(reverse("models-admin") + (f"?{params}" if params else "") + "#downloads")


@require_POST
@staff_only
def download_create(request: HttpRequest) -> HttpResponse:
    repo_id = request.POST.get("repo_id", "")
    filename = request.POST.get("filename", "")
    try:
        download, created = download_start(
            repo_id=repo_id,
            filename=filename,
            revision=request.POST.get("revision", "") or "main",
            user=request.user,
        )
    except DownloadRefused as exc:
        messages.error(request, str(exc))
        return _back(request)
    if created and download.resumed_from_bytes:
        messages.success(
            request, f"Resuming {filename} from {filesizeformat(download.resumed_from_bytes)}…"
        )
    elif created:
        messages.success(request, f"Downloading {filename}…")
    else:
        messages.info(request, f"{filename} is already being downloaded; showing that download.")
    return _back(request)


@require_POST
@staff_only
def download_cancel_view(request: HttpRequest, download_id: int) -> HttpResponse:
    """The form behind the Cancel button, for a page without its socket; the page itself
    sends the socket's `cancel` frame."""
    download = get_object_or_404(Download, pk=download_id)
    try:
        download_cancel(download=download)
        messages.success(request, f"Cancelling the download of {download.filename}…")
    except DownloadRefused as exc:
        messages.error(request, str(exc))
    return _back(request)


@require_POST
@staff_only
def models_scan(request: HttpRequest) -> HttpResponse:
    report = localmodel_scan()
    for model in report.added:
        messages.success(request, f"Found {model.file}; registered as {model.name}.")
    for model in report.missing:
        messages.error(request, f"The file of {model.name} ({model.file}) is missing.")
    for file, why in report.unreadable:
        messages.error(request, f"Skipped {file}: {why}")
    if not (report.added or report.missing or report.unreadable):
        messages.info(request, "Nothing new in the models dir.")
    return redirect("models-admin")


def _int_options(request: HttpRequest) -> dict[str, int]:
    values = {}
    for key in LOAD_OPTION_LIMITS:
        raw = request.POST.get(key, "").strip()
        if raw:
            if not raw.lstrip("-").isdigit():
                raise WorkerControlError(f"{key} must be a whole number.")
            values[key] = int(raw)
    return values


def _reply(request: HttpRequest, level: int, text: str) -> HttpResponse:
    """The outcome of an action: for the page's script (which keeps its socket open, so it hears
    how a load on a worker ends) a JSON sentence; for a plain form, a flash and the page again."""
    if request.headers.get("Accept") == "application/json":
        status = 400 if level == messages.ERROR else 200
        return JsonResponse({"level": DEFAULT_TAGS[level], "message": text}, status=status)
    messages.add_message(request, level, text)
    return redirect("models-admin")


def _group_ids(request: HttpRequest) -> list[int]:
    return [int(raw) for raw in request.POST.getlist("groups") if raw.isdigit()]


@require_POST
@staff_only
def model_action(request: HttpRequest, model_id: int) -> HttpResponse:
    model = get_object_or_404(LocalModel, pk=model_id)
    action = request.POST.get("action")
    worker = request.POST.get("worker", "")
    try:
        if action == "default":
            localmodel_set_default(model=model)
            return _reply(request, messages.SUCCESS, f"{model.name} is now the default model.")
        if action == "delete":
            localmodel_delete(model=model)
            return _reply(request, messages.SUCCESS, f"Deleted {model.name}.")
        if action == "load":
            worker_model_load(worker=worker, model=model, options=_int_options(request))
            return _reply(request, messages.SUCCESS, f"Loading {model.name} on {worker}…")
        if action == "access":
            groups = localmodel_set_groups(model=model, group_ids=_group_ids(request))
            names = ", ".join(g.name for g in groups)
            opened = f"the groups {names} (and staff)" if groups else "everyone"
            return _reply(request, messages.SUCCESS, f"{model.name} is now open to {opened}.")
        if action == "unload":
            worker_model_unload(worker=worker, model=model)
            return _reply(request, messages.SUCCESS, f"Unloading {model.name} from {worker}…")
    except (ModelInUse, WorkerControlError) as exc:
        return _reply(request, messages.ERROR, str(exc))
    return _reply(request, messages.ERROR, "Unknown action.")


def _member_ids(request: HttpRequest) -> list[int]:
    return [int(raw) for raw in request.POST.getlist("members") if raw.isdigit()]


@require_POST
@staff_only
def group_create(request: HttpRequest) -> HttpResponse:
    try:
        group = group_save(name=request.POST.get("name", ""), member_ids=_member_ids(request))
    except GroupRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Made the group {group.name}; open models to it below.")
    return redirect(reverse("models-admin") + "#groups")


@require_POST
@staff_only
def group_members(request: HttpRequest, group_id: int) -> HttpResponse:
    group = get_object_or_404(Group, pk=group_id)
    group_save(name=group.name, member_ids=_member_ids(request), group=group)
    count = group.user_set.count()
    messages.success(request, f"{group.name} now has {count} member{'s' if count != 1 else ''}.")
    return redirect(reverse("models-admin") + "#groups")
