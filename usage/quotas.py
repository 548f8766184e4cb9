"""Quotas and rate limits: tokens per day and requests per minute, for a user, from their own
Quota row, their groups' rows or the site defaults (WIZ_TOKENS_PER_DAY, WIZ_REQUESTS_PER_MINUTE).

`quota_take` runs in the transaction that queues an answer, after the user's row is locked
(chat.submission): two requests of one user are then counted one after the other, so a limit of
five lets exactly five through however many arrive at once."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import F, Sum
from django.utils import timezone

from usage.models import DailyUsage, Quota, RequestStamp

MINUTE = timedelta(minutes=1)


class QuotaExceeded(Exception):
    """Over a limit; the message says which and when it resets, `retry_after` in seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


@dataclass(frozen=True)
class Limits:
    tokens_per_day: int  # 0: no limit
    requests_per_minute: int  # 0: no limit


def _most_generous(values: list[int]) -> int:
    return 0 if 0 in values else max(values)


def limits_for(user: AbstractBaseUser) -> Limits:
    """The user's own row decides a field it sets; else the most generous of their groups'
    rows that set it (being in one more group never takes anything away); else the default."""
    own = Quota.objects.filter(user=user.pk).first()
    groups = list(Quota.objects.filter(group__user=user.pk))
    found = {}
    for field in ("tokens_per_day", "requests_per_minute"):
        value = getattr(own, field) if own is not None else None
        if value is None:
            given = [getattr(q, field) for q in groups if getattr(q, field) is not None]
            value = _most_generous(given) if given else None
        found[field] = value
    return Limits(
        tokens_per_day=(
            found["tokens_per_day"]
            if found["tokens_per_day"] is not None
            else settings.WIZ_TOKENS_PER_DAY
        ),
        requests_per_minute=(
            found["requests_per_minute"]
            if found["requests_per_minute"] is not None
            else settings.WIZ_REQUESTS_PER_MINUTE
        ),
    )


def tokens_used_today(user: AbstractBaseUser) -> int:
    used = DailyUsage.objects.filter(user=user.pk, day=timezone.localdate()).aggregate(
        tokens=Sum(F("prompt_tokens") + F("completion_tokens"))
    )["tokens"]
    return int(used or 0)


def _in(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 120:
        return f"{seconds} seconds"
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} minutes"


def quota_take(*, user: AbstractBaseUser) -> None:
    """Count one request against the user's limits, or raise QuotaExceeded. Call it inside the
    transaction that queues the answer, with the user's row locked."""
    limits = limits_for(user)
    now = timezone.now()
    if limits.tokens_per_day:
        used = tokens_used_today(user)
        if used >= limits.tokens_per_day:
            midnight = timezone.make_aware(
                datetime.combine(timezone.localdate(now) + timedelta(days=1), time())
            )
            wait = (midnight - now).total_seconds()
            raise QuotaExceeded(
                f"You have used {used:,} of your {limits.tokens_per_day:,} tokens for today; "
                f"the quota resets at midnight {settings.TIME_ZONE} (in {_in(wait)}). Ask an "
                "admin if you need more.",
                retry_after=max(1, math.ceil(wait)),
            )
    if limits.requests_per_minute:
        stamps = RequestStamp.objects.filter(user=user.pk)
        stamps.filter(at__lte=now - MINUTE).delete()
        recent = list(stamps.order_by("at").values_list("at", flat=True))
        if len(recent) >= limits.requests_per_minute:
            # The oldest of the last minute's requests leaves the window first.
            free_at = recent[-limits.requests_per_minute] + MINUTE
            wait = (free_at - now).total_seconds()
            raise QuotaExceeded(
                f"You have asked for {len(recent)} answers in the last minute; the limit is "
                f"{limits.requests_per_minute} a minute. You can ask again at "
                f"{timezone.localtime(free_at):%H:%M:%S} {settings.TIME_ZONE} (in {_in(wait)}).",
                retry_after=max(1, math.ceil(wait)),
            )
    if limits.requests_per_minute:
        RequestStamp.objects.create(user_id=user.pk, at=now)
