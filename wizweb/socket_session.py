"""Whether an open WebSocket may still act for the user who opened it.

A socket is authenticated once, by the session cookie of its handshake, and may stay open for
days. What happens meanwhile must reach it: an admin disables the account or takes its staff
rights away, the user logs out (Django deletes the session) or changes their password (the
session's auth hash no longer matches, so Django refuses that session from then on). The
consumers call `socket_user_reload` before serving a request, with the user as the database has
it now, or `SocketSessionEnded` saying why the socket must close.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.auth import get_user
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User


class SocketSessionEnded(Exception):
    """The socket may no longer act for its user; the message says what to do."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


async def socket_user_reload(scope: dict[str, Any], user_id: Any) -> User:
    """The socket's user as stored now, if the session it was opened with still stands."""
    # The scope's session object was read once, at the handshake: read it again from the store.
    session_key = scope["session"].session_key
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    # channels' get_user is Django's session check (a deleted session, a changed auth hash, an
    # inactive user all give AnonymousUser), done on the scope of our fresh session.
    user = await get_user({"session": session})
    if user.is_authenticated and user.pk == user_id:
        return user
    if not await get_user_model().objects.filter(pk=user_id, is_active=True).aexists():
        raise SocketSessionEnded(
            "account_disabled", "Your account has been disabled; ask an admin."
        )
    raise SocketSessionEnded(
        "session_ended",
        "You logged out or your password was changed since this page was opened; log in again.",
    )
