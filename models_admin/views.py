"""The model-admin page, `/models/` (staff only)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from models_admin.loading import LoadOptions
from models_admin.models import LocalModel
from models_admin.services import ModelInUse, localmodel_delete, localmodel_set_default
from models_admin.worker_control import (
    LOAD_OPTION_LIMITS,
    WorkerControlError,
    worker_model_load,
    worker_model_unload,
)
from models_admin.workers import worker_states
from wizweb.redis_server import redis_connection


def staff_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_staff:
            return HttpResponseForbidden("The model admin is for staff only.")
        return view(request, *args, **kwargs)

    return wrapper


@require_GET
@staff_only
def models_page(request: HttpRequest) -> HttpResponse:
    workers = worker_states(redis_connection())
    rows = []
    for model in LocalModel.objects.all():
        holders = [w.name for w in workers if model.name in w.models]
        rows.append({"model": model, "holders": holders, "load": LoadOptions.for_model(model)})
    return render(
        request,
        "models_admin/models.html",
        {"rows": rows, "workers": workers, "load_limits": LOAD_OPTION_LIMITS},
    )


def _int_options(request: HttpRequest) -> dict[str, int]:
    values = {}
    for key in LOAD_OPTION_LIMITS:
        raw = request.POST.get(key, "").strip()
        if raw:
            if not raw.lstrip("-").isdigit():
                raise WorkerControlError(f"{key} must be a whole number.")
            values[key] = int(raw)
    return values


@require_POST
@staff_only
def model_action(request: HttpRequest, model_id: int) -> HttpResponse:
    model = get_object_or_404(LocalModel, pk=model_id)
    action = request.POST.get("action")
    try:
        if action == "default":
            localmodel_set_default(model=model)
            messages.success(request, f"{model.name} is now the default model.")
        elif action == "delete":
            localmodel_delete(model=model)
            messages.success(request, f"Deleted {model.name}.")
        elif action == "load":
            worker = request.POST.get("worker", "")
            worker_model_load(worker=worker, model=model, options=_int_options(request))
            messages.success(request, f"Loading {model.name} on {worker}…")
        elif action == "unload":
            worker = request.POST.get("worker", "")
            worker_model_unload(worker=worker, model=model)
            messages.success(request, f"Unloading {model.name} from {worker}…")
        else:
            messages.error(request, "Unknown action.")
    except (ModelInUse, WorkerControlError) as exc:
        messages.error(request, str(exc))
    return redirect("models-admin")
