"""One log line per HTTP request (logger `wizweb.requests`): method, path, status, duration,
bytes, who (the session's user, or the owner of the API key used) and from where.

Never the query string, a header or a body: those carry search words, prompts and keys. A
streamed response (server-sent events) is logged when its stream ends, so its duration is the
whole answer's, and `outcome` says whether the client stayed to the end."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse

from wizweb.metrics import HTTP_REQUESTS

log = logging.getLogger("wizweb.requests")


def _who(request: HttpRequest, user: Any) -> dict[str, Any]:
    api_key = getattr(request, "wiz_api_key", None)
    if api_key is not None:  # the key's owner, loaded with it (select_related)
        return {
            "user": api_key.user.get_username(),
            "user_id": api_key.user_id,
            "api_key": api_key.pk,
        }
    if user is not None and user.is_authenticated:
        return {"user": user.get_username(), "user_id": user.pk}
    return {"user": None}


class RequestLogMiddleware:
    """First in MIDDLEWARE, so that its duration covers every other middleware too."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        started = time.monotonic()
        response = self.get_response(request)
        try:
            # request.user is lazy: reading it is one session lookup, in this (sync) thread.
            who = _who(request, getattr(request, "user", None))
        except Exception:  # the database is away (/healthz says so): the line goes without
            who = {"user": None}
        return self._logged(request, response, who, started)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        started = time.monotonic()
        response = await self.get_response(request)
        try:
            user = await request.auser() if hasattr(request, "auser") else None
            who = _who(request, user)
        except Exception:  # as above
            who = {"user": None}
        return self._logged(request, response, who, started)

    def _logged(
        self, request: HttpRequest, response: HttpResponse, who: dict[str, Any], started: float
    ) -> HttpResponse:
        fields = {
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            **who,
            "ip": request.META.get("REMOTE_ADDR"),
        }
        if isinstance(response, FileResponse):  # a static file: its length is known
            fields["bytes"] = int(response.get("Content-Length") or 0)
            _line(fields, started, "complete")
            return response
        if not isinstance(response, StreamingHttpResponse):
            fields["bytes"] = len(response.content)
            _line(fields, started, "complete")
            return response
        if response.is_async:
            response.streaming_content = _logged_async(response.streaming_content, fields, started)
        else:
            response.streaming_content = _logged_sync(response.streaming_content, fields, started)
        return response


def _line(fields: dict[str, Any], started: float, outcome: str) -> None:
    HTTP_REQUESTS.labels(fields["method"], str(fields["status"])).inc()
    ms = round((time.monotonic() - started) * 1000, 1)
    log.info(
        "%s %s %s",
        fields["method"],
        fields["path"],
        fields["status"],
        extra={**fields, "ms": ms, "outcome": outcome},
    )


def _logged_sync(content: Any, fields: dict[str, Any], started: float) -> Iterator[bytes]:
    sent, outcome = 0, "interrupted"
    try:
        for part in content:
            sent += len(part)
            yield part
        outcome = "complete"
    finally:
        _line({**fields, "bytes": sent}, started, outcome)


async def _logged_async(
    content: Any, fields: dict[str, Any], started: float
) -> AsyncIterator[bytes]:
    sent, outcome = 0, "interrupted"
    try:
        async for part in content:
            sent += len(part)
            yield part
        outcome = "complete"
    finally:
        _line({**fields, "bytes": sent}, started, outcome)
