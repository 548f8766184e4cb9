"""The usage pages: `/usage/` (staff: everyone's figures) and `/account/usage/` (your own),
with charts, totals and a CSV download of the daily rows, for a date range."""

from __future__ import annotations

import csv
from datetime import date, timedelta

from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from usage.quotas import limits_for, tokens_used_today
from usage.selectors import DateRange, UsageReport, ttft_p95_ms, usage_report

DEFAULT_DAYS = 30
MAX_DAYS = 366


def _span(request: HttpRequest) -> tuple[DateRange, str]:
    """The range asked for (`from`, `to`, as YYYY-MM-DD), or the last 30 days; and a sentence
    when what was asked for could not be used."""
    today = timezone.localdate()
    default = DateRange(today - timedelta(days=DEFAULT_DAYS - 1), today)
    raw_first, raw_last = request.GET.get("from", ""), request.GET.get("to", "")
    if not raw_first and not raw_last:
        return default, ""
    try:
        last = date.fromisoformat(raw_last) if raw_last else today
        first = date.fromisoformat(raw_first) if raw_first else last - timedelta(DEFAULT_DAYS - 1)
    except ValueError:
        return default, "Dates are written YYYY-MM-DD; showing the last 30 days."
    if first > last:
        return default, "The first day comes after the last; showing the last 30 days."
    if (last - first).days >= MAX_DAYS:
        return DateRange(last - timedelta(MAX_DAYS - 1), last), (
            f"A range is at most {MAX_DAYS} days; showing the {MAX_DAYS} days up to {last}."
        )
    return DateRange(first, last), ""


def _csv(report: UsageReport, filename: str) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(
        [
            "day",
            "user",
            "model",
            "answers",
            "failed",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "ttft_p95_ms",
        ]
    )
    for row in report.rows:
        p95 = ttft_p95_ms([row.ttft_buckets])
        writer.writerow(
            [
                row.day.isoformat(),
                row.user.get_username(),
                row.model_name,
                row.answers,
                row.failed,
                row.prompt_tokens,
                row.completion_tokens,
                row.cached_tokens,
                "" if p95 is None else p95,
            ]
        )
    return response


def _page(
    request: HttpRequest,
    *,
    user_id: int | None,
    template_title: str,
    limits: dict[str, int] | None = None,
) -> HttpResponse:
    span, warning = _span(request)
    report = usage_report(span=span, user_id=user_id)
    if request.GET.get("format") == "csv":
        who = "all" if user_id is None else request.user.get_username()
        return _csv(report, f"usage-{who}-{span.first}-{span.last}.csv")
    return render(
        request,
        "usage/usage.html",
        {
            "title": template_title,
            "everyone": user_id is None,
            "report": report,
            "span": span,
            "warning": warning,
            "chart_data": report.chart_data(),
            "limits": limits,
        },
    )


@require_GET
def usage_page(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        return HttpResponseForbidden(
            "The usage of everyone is for staff only; yours is on /account/usage/."
        )
    return _page(request, user_id=None, template_title="Usage")


@require_GET
def account_usage(request: HttpRequest) -> HttpResponse:
    user = request.user
    assert isinstance(user, User)  # LoginRequiredMiddleware lets no anonymous user through
    limits = limits_for(user)
    own_limits = {
        "tokens_per_day": limits.tokens_per_day,
        "tokens_today": tokens_used_today(user),
        "requests_per_minute": limits.requests_per_minute,
    }
    return _page(request, user_id=user.pk, template_title="Your usage", limits=own_limits)
