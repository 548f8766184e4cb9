"""Project-level views: the health check, the API keys page, sign-up and the locked login."""

from __future__ import annotations

import time
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.db import DatabaseError, connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods
from rq import Worker

from inference.presence import worker_states
from wizweb.apikeys import apikey_create, apikey_from_request, apikey_revoke
from wizweb.models import ApiKey
from wizweb.preferences import preferences_theme_set
from wizweb.redis_server import redis_connection


def _check_db() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "error": str(exc)}


def _check_redis_and_workers() -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        redis = redis_connection()
        started = time.perf_counter()
        redis.ping()
        redis_state = {"ok": True, "ping_ms": round((time.perf_counter() - started) * 1000, 2)}
    except Exception as exc:
        return {"ok": False, "error": str(exc)}, {"ok": False, "error": "Redis is down."}
    inference = worker_states(redis)
    rq_workers = Worker.all(connection=redis)
    downloads = [w for w in rq_workers if settings.DOWNLOAD_QUEUE in w.queue_names()]
    documents = [w for w in rq_workers if settings.DOCUMENT_QUEUE in w.queue_names()]
    worker_state = {
        "ok": bool(inference) and bool(downloads),
        "inference": [
            {
                "name": w.name,
                "state": "busy" if w.busy else "idle",
                "models": w.models,
                "slots": {"busy": w.slots_busy, "total": w.slots_total, "waiting": w.slots_waiting},
                "messages": w.messages,
                "tokens_per_s": w.tokens_per_s,
            }
            for w in inference
        ],
        "downloads": [{"name": w.name, "state": w.get_state()} for w in downloads],
        # Named, up or down, but not part of `ok`: without it chats are still answered, and
        # uploads only wait, queued, until one starts (a second machine runs none).
        "documents": [{"name": w.name, "state": w.get_state()} for w in documents],
    }
    if not documents:
        worker_state["documents_error"] = (
            "No documents worker is running: uploaded files wait, unread, until one starts."
        )
    if not worker_state["ok"]:
        worker_state["error"] = (
            "No inference worker is running."
            if not inference
            else ("No download worker is running.")
        )
    return redis_state, worker_state


def _is_staff(request: HttpRequest) -> bool:
    """A staff session or a staff user's API key; False when the database cannot tell (it is
    down, and /healthz must still answer)."""
    try:
        if request.user.is_authenticated:
            return bool(request.user.is_staff)
        api_key = apikey_from_request(request)
        return api_key is not None and api_key.user.is_staff
    except DatabaseError:
        return False


@login_not_required
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """ok or not for anyone (a load balancer, a monitor); what is down, and the names of hosts,
    workers and models, only for staff: they tell an outsider too much about the machine."""
    db = _check_db()
    redis_state, workers = _check_redis_and_workers()
    healthy = db["ok"] and redis_state["ok"] and workers["ok"]
    body: dict[str, Any] = {"ok": healthy}
    if _is_staff(request):
        body.update(db=db, redis=redis_state, workers=workers)
    return JsonResponse(body, status=200 if healthy else 503)


class ApiKeyRevokeForm(forms.Form):
    # An IntegerField, not str.isdigit(): "²".isdigit() is true and int("²") fails.
    key = forms.IntegerField(min_value=1, max_value=2**63 - 1)


@require_http_methods(["POST"])
def account_theme(request: HttpRequest) -> HttpResponse:
    """The dark mode toggle's choice, kept on the account (static/wizweb/theme.js)."""
    try:
        preferences_theme_set(user_id=request.user.pk, theme=request.POST.get("theme", ""))
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"theme": request.POST["theme"]})


# A new key is shown once, in the answer to the POST that made it: no cache may keep a copy.
@never_cache
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    user = request.user
    assert isinstance(user, User)  # LoginRequiredMiddleware lets no anonymous user through
    context: dict[str, Any] = {}
    if request.method == "POST":
        if request.POST.get("action") == "create":
            created = apikey_create(
                user=user,
                name=request.POST.get("name", "")[:100],
                keep_history=bool(request.POST.get("keep_history")),
            )
            context.update(new_key=created.api_key, new_secret=created.secret)
        elif request.POST.get("action") == "revoke":
            revoke = ApiKeyRevokeForm(request.POST)
            if revoke.is_valid():
                apikey_revoke(user=user, key_id=revoke.cleaned_data["key"])
    context["keys"] = ApiKey.objects.filter(user=user)
    return render(request, "wizweb/api_keys.html", context)


def login_locked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """What django-axes answers a login from a locked-out address or account (its
    AXES_LOCKOUT_CALLABLE): the login page, with a sentence instead of the usual error.

    axes calls this with (request, response, credentials) or (request, credentials), depending
    on its sync or async path; neither is needed here."""
    context = {
        "locked_minutes": settings.WIZ_LOGIN_LOCKOUT_MINUTES,
        "signup_allowed": settings.WIZ_ALLOW_SIGNUP,
        "next": request.POST.get("next", ""),
    }
    return render(request, "registration/login.html", context, status=429)


@login_not_required
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Self-service accounts, only where an admin allowed them (WIZ_ALLOW_SIGNUP)."""
    if not settings.WIZ_ALLOW_SIGNUP:
        raise Http404("Sign-up is off; ask an admin for an account.")
    form: UserCreationForm[User] = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        # Named: with django-axes' backend beside it, Django cannot guess which one to record.
        login(request, form.save(), backend="django.contrib.auth.backends.ModelBackend")
        return redirect("/")
    return render(request, "registration/signup.html", {"form": form})
