"""Reads of the usage table for the usage pages and their CSV: rows in a date range, series per
day for the charts, totals, and the p95 time to first token from the rows' histograms."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from django.db.models import QuerySet

from usage.models import DailyUsage
from usage.recording import ttft_bucket_ms


@dataclass(frozen=True)
class DateRange:
    first: date
    last: date

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]


def usage_rows(*, span: DateRange, user_id: int | None = None) -> QuerySet[DailyUsage]:
    rows = DailyUsage.objects.filter(day__gte=span.first, day__lte=span.last).select_related("user")
    if user_id is not None:
        rows = rows.filter(user_id=user_id)
    return rows.order_by("day", "user__username", "model_name")


def ttft_p95_ms(buckets: Iterable[dict[str, int]]) -> float | None:
    """The 95th percentile of the answers' time to first token, as the upper bound of the
    histogram bucket it falls in (buckets grow by a tenth, so within a tenth); None without
    any answer that had a first token."""
    counts: Counter[int] = Counter()
    for histogram in buckets:
        for key, n in histogram.items():
            counts[int(key)] += n
    total = sum(counts.values())
    if not total:
        return None
    rank, seen = 0.95 * total, 0
    for bucket in sorted(counts):
        seen += counts[bucket]
        if seen >= rank:
            return round(ttft_bucket_ms(bucket), 1)
    return None  # not reached: the last bucket holds the rest


@dataclass
class Totals:
    answers: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft: list[dict[str, int]] = field(default_factory=list)

    def add(self, row: DailyUsage) -> None:
        self.answers += row.answers
        self.failed += row.failed
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        self.ttft.append(row.ttft_buckets)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def ttft_p95_ms(self) -> float | None:
        return ttft_p95_ms(self.ttft)


def _totals_by(rows: list[DailyUsage], key: Any) -> list[tuple[str, Totals]]:
    found: dict[str, Totals] = defaultdict(Totals)
    for row in rows:
        found[key(row)].add(row)
    return sorted(found.items(), key=lambda item: (-item[1].tokens, item[0]))


@dataclass(frozen=True)
class UsageReport:
    span: DateRange
    rows: list[DailyUsage]
    by_user: list[tuple[str, Totals]]
    by_model: list[tuple[str, Totals]]
    total: Totals

    def chart_data(self) -> dict[str, Any]:
        """What the page's charts draw: one x value per day (unix seconds, UTC midnight) and
        one series per person, per model, and the answers and p95 per day."""
        days = self.span.days
        index = {day: n for n, day in enumerate(days)}
        by_user: dict[str, list[int]] = {name: [0] * len(days) for name, _ in self.by_user}
        by_model: dict[str, list[int]] = {name: [0] * len(days) for name, _ in self.by_model}
        per_day = [Totals() for _ in days]
        for row in self.rows:
            n = index[row.day]
            by_user[row.user.get_username()][n] += row.tokens
            by_model[row.model_name][n] += row.tokens
            per_day[n].add(row)
        return {
            "days": [int((day - date(1970, 1, 1)).total_seconds()) for day in days],
            "tokens_by_user": by_user,
            "tokens_by_model": by_model,
            "answers": [t.answers for t in per_day],
            "ttft_p95_ms": [t.ttft_p95_ms for t in per_day],
        }


def usage_report(*, span: DateRange, user_id: int | None = None) -> UsageReport:
    rows = list(usage_rows(span=span, user_id=user_id))
    total = Totals()
    for row in rows:
        total.add(row)
    return UsageReport(
        span=span,
        rows=rows,
        by_user=_totals_by(rows, lambda row: row.user.get_username()),
        by_model=_totals_by(rows, lambda row: row.model_name),
        total=total,
    )
