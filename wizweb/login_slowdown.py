"""Failed logins slow down the next try, before django-axes locks them out."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.urls import reverse

# The first two failures cost nothing (a typo, then another); from the third try on each one
# waits twice as long as the last (WIZ_LOGIN_SLOWDOWN_FIRST_S at first, 0.5 s), up to eight
# times the first wait, until axes locks the address or the account at WIZ_LOGIN_FAILURE_LIMIT
# failures.
MAX_DOUBLINGS = 3


def login_delay(failures: int) -> float:
    """Seconds a login attempt waits, given the failures already recorded for its address or
    its account (whichever has more)."""
    if failures < 2:
        return 0.0
    return settings.WIZ_LOGIN_SLOWDOWN_FIRST_S * 2 ** min(MAX_DOUBLINGS, failures - 2)


def login_failures(request: HttpRequest) -> int:
    """Failures axes holds against this request's address or the account it names."""
    from axes.handlers.proxy import AxesProxyHandler

    username = request.POST.get("username", "")
    return int(AxesProxyHandler.get_failures(request, {"username": username}))


class LoginSlowdownMiddleware:
    """Holds a login POST (the login page's and the admin's) for `login_delay(failures)`
    before it is checked. On daphne's async path the wait is an asyncio sleep, so nobody
    else's request waits with it."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    @staticmethod
    def _is_login(request: HttpRequest) -> bool:
        return (
            settings.AXES_ENABLED
            and request.method == "POST"
            and request.path in (reverse("login"), reverse("admin:login"))
        )

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        if self._is_login(request):
            time.sleep(login_delay(login_failures(request)))
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if self._is_login(request):
            failures = await sync_to_async(login_failures)(request)
            await asyncio.sleep(login_delay(failures))
        response: HttpResponseBase = await self.get_response(request)
        return response
