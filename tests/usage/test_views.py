"""The usage pages: /usage/ for staff (everyone's figures), /account/usage/ for each user (their
own only); date ranges; the CSV download."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from usage.models import DailyUsage
from usage.recording import ttft_bucket

pytestmark = pytest.mark.django_db(transaction=True)


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def rows(owner: Any, outsider: Any) -> date:
    today = timezone.localdate()
    DailyUsage.objects.create(
        user=owner,
        day=today,
        model_name="Big",
        answers=3,
        prompt_tokens=300,
        completion_tokens=30,
        ttft_buckets={str(ttft_bucket(100)): 3},
    )
    DailyUsage.objects.create(
        user=owner, day=today - timedelta(days=1), model_name="Small", answers=1, prompt_tokens=7
    )
    DailyUsage.objects.create(
        user=outsider, day=today, model_name="Small", answers=2, completion_tokens=5000
    )
    DailyUsage.objects.create(
        user=outsider, day=today - timedelta(days=40), model_name="Small", answers=9
    )
    return today


def test_staff_see_everyones_usage_in_the_last_30_days(staff: Any, rows: date) -> None:
    response = logged_in(staff).get("/usage/")
    assert response.status_code == 200
    report = response.context["report"]
    assert [name for name, _ in report.by_user] == ["mallory", "alice"]  # most tokens first
    assert report.total.answers == 6  # the row 40 days ago is outside the range
    data = response.context["chart_data"]
    assert len(data["days"]) == 30
    assert data["tokens_by_user"]["alice"][-2:] == [7, 330]
    assert data["tokens_by_model"]["Small"][-1] == 5000
    assert data["answers"][-1] == 5
    assert data["ttft_p95_ms"][-1] is not None
    page = response.content.decode()
    assert 'data-chart="tokens_by_user"' in page and "vendor/uplot/uPlot.min.css" in page


def test_a_date_range_narrows_it(staff: Any, rows: date) -> None:
    today = rows
    response = logged_in(staff).get(
        "/usage/", {"from": (today - timedelta(days=45)).isoformat(), "to": today.isoformat()}
    )
    assert response.context["report"].total.answers == 15
    one_day = logged_in(staff).get("/usage/", {"from": today.isoformat(), "to": today.isoformat()})
    assert one_day.context["report"].total.answers == 5
    bad = logged_in(staff).get("/usage/", {"from": "yesterday"})
    assert "Dates are written YYYY-MM-DD" in bad.content.decode()


def test_it_downloads_the_daily_rows_as_csv(staff: Any, rows: date) -> None:
    response = logged_in(staff).get("/usage/", {"format": "csv"})
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    lines = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["day"], r["user"], r["model"]) for r in lines] == [
        ((rows - timedelta(days=1)).isoformat(), "alice", "Small"),
        (rows.isoformat(), "alice", "Big"),
        (rows.isoformat(), "mallory", "Small"),
    ]
    assert lines[1]["prompt_tokens"] == "300" and lines[1]["ttft_p95_ms"] != ""


def test_the_usage_of_everyone_is_for_staff_only(owner: Any, rows: date) -> None:
    assert logged_in(owner).get("/usage/").status_code == 403
    assert logged_in(owner).get("/usage/", {"format": "csv"}).status_code == 403
    assert Client().get("/usage/").status_code == 302


def test_each_user_sees_only_their_own_figures(owner: Any, outsider: Any, rows: date) -> None:
    response = logged_in(owner).get("/account/usage/")
    report = response.context["report"]
    assert [name for name, _ in report.by_user] == ["alice"]
    assert report.total.tokens == 337
    page = response.content.decode()
    assert "mallory" not in page and 'data-chart="tokens_by_user"' not in page
    lines = list(
        csv.DictReader(
            io.StringIO(
                logged_in(outsider).get("/account/usage/", {"format": "csv"}).content.decode()
            )
        )
    )
    assert {r["user"] for r in lines} == {"mallory"}
    assert Client().get("/account/usage/").status_code == 302


def test_a_user_sees_their_own_limits_and_todays_tokens(
    owner: Any, outsider: Any, rows: date
) -> None:
    from usage.models import Quota

    Quota.objects.create(user=owner, tokens_per_day=1000, requests_per_minute=4)
    page = logged_in(owner).get("/account/usage/")
    assert page.context["limits"] == {
        "tokens_per_day": 1000,
        "tokens_today": 330,
        "requests_per_minute": 4,
    }
    assert 'of your <strong data-field="tokens-per-day">1,000</strong> a day' in (
        page.content.decode()
    )
    # The outsider has no quota: no limit, and her own day's tokens.
    other = logged_in(outsider).get("/account/usage/")
    assert other.context["limits"]["tokens_today"] == 5000
    assert "no daily limit" in other.content.decode()
