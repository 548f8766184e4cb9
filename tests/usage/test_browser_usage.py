"""The usage page in a real browser (chromium through Playwright, daphne, the real worker): after
real answers from two people on two models, staff see the charts and the totals, and a user's
own page shows only theirs. Saves test-artifacts/usage.png."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from django.db.models import F, Sum
from playwright.sync_api import Browser, Page, expect

from tests.browser import ARTIFACTS
from tests.chat.test_browser_accounts import log_in_as
from tests.conftest import SECOND_MODEL
from usage.models import DailyUsage
from wizweb.apikeys import apikey_create

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PROMPTS = ["Name a colour.", "Write a haiku about tea.", "Count to five."]


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def answer(web_server: str, user: Any, model: str, prompt: str, seed: int) -> None:
    secret = apikey_create(user=user, name="usage test").secret
    with openai.OpenAI(base_url=f"{web_server}/v1", api_key=secret, max_retries=0) as client:
        completion = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=24, seed=seed
        )
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def tokens_of(user: Any) -> int:
    total = DailyUsage.objects.filter(user=user).aggregate(
        tokens=Sum(F("prompt_tokens") + F("completion_tokens"))
    )["tokens"]
    return int(total or 0)


def test_staff_see_real_answers_charted_and_a_user_only_their_own(
    page: Page,
    web_server: str,
    inference_worker: Any,
    owner: Any,
    outsider: Any,
    staff: Any,
    default_model: Any,
    second_model: Any,
) -> None:
    for seed, prompt in enumerate(PROMPTS):
        answer(web_server, owner, default_model.name, prompt, seed)
    answer(web_server, owner, SECOND_MODEL, PROMPTS[0], 7)
    answer(web_server, outsider, SECOND_MODEL, PROMPTS[1], 8)
    assert DailyUsage.objects.filter(user=owner).count() == 2  # one row per model

    log_in_as(page, web_server, "admin")
    page.goto(f"{web_server}/usage/")
    expect(page.locator("body[data-charts-drawn='3']")).to_be_attached()
    expect(page.locator(".chart canvas")).to_have_count(3)
    expect(page.locator("#summary [data-field=answers]")).to_have_text("5")
    alice = page.locator("#by-user tr[data-user=alice] [data-field=tokens]")
    expect(alice).to_have_text(f"{tokens_of(owner):,}")
    expect(page.locator("#by-model tr")).to_have_count(3)  # the header and two models
    # The legend names every person and model charted.
    for name in ("alice", "mallory", default_model.name, SECOND_MODEL):
        expect(page.locator(".u-legend").get_by_text(name, exact=True).first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "usage.png"), full_page=True)

    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    lines = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("day,user,model,answers")
    assert len(lines) == 1 + 3  # alice on two models, mallory on one

    # Mallory's own page: her figures, not alice's, and no chart of people.
    page.context.clear_cookies()
    log_in_as(page, web_server, "mallory")
    page.goto(f"{web_server}/account/usage/")
    expect(page.locator("body[data-charts-drawn='2']")).to_be_attached()
    expect(page.locator("#summary [data-field=tokens]")).to_have_text(f"{tokens_of(outsider):,}")
    expect(page.get_by_text("alice")).to_have_count(0)
    page.goto(f"{web_server}/usage/")
    expect(page.get_by_text("for staff only")).to_be_visible()
