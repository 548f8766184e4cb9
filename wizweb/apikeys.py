"""Creating, revoking and checking API keys."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import User
from django.http import HttpRequest
from django.utils import timezone

from wizweb.models import ApiKey, api_key_hash

KEY_PREFIX = "wiz-"
LAST_USED_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class NewKey:
    api_key: ApiKey
    secret: str  # shown once, never stored


def apikey_create(*, user: User, name: str, keep_history: bool = False) -> NewKey:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        user=user,
        name=name.strip() or "key",
        prefix=secret[: len(KEY_PREFIX) + 6],
        key_hash=api_key_hash(secret),
        keep_history=keep_history,
    )
    return NewKey(api_key, secret)


def apikey_revoke(*, user: User, key_id: int) -> bool:
    return bool(
        ApiKey.objects.filter(user=user, pk=key_id, revoked_at=None).update(
            revoked_at=timezone.now()
        )
    )


def apikey_from_request(request: HttpRequest) -> ApiKey | None:
    """The active key in `Authorization: Bearer KEY`, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    api_key = (
        ApiKey.objects.select_related("user")
        .filter(key_hash=api_key_hash(secret.strip()), revoked_at=None, user__is_active=True)
        .first()
    )
    if api_key is not None:
        now = timezone.now()
        # To the minute: a write per request would cost every request a database write.
        if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_EVERY:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        request.wiz_api_key = api_key  # type: ignore[attr-defined]  # who, for the request log
    return api_key
