"""The screenshots of issue 17's closing note: a conversation of a few answers on a desktop
(1440 by 900) and on a phone (390 by 844), light and dark (the account's choice), written to
test-artifacts/chat-{desktop,phone}-{light,dark}.png. What they show is checked as well, so a
page that broke does not pass as a picture of it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, expect

from chat.models import Conversation, Message
from tests.browser import ARTIFACTS
from tests.chat.test_browser import log_in
from tests.chat.test_browser_sidebar import ready
from wizweb.preferences import preferences_theme_set

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZES = {
    "desktop": {"viewport": {"width": 1440, "height": 900}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}

TURNS = [
    (
        "How do I read a CSV file in Python and add up one column?",
        (
            "Use the standard library's `csv` module:\n\n"
            '```python\nimport csv\n\nwith open("sales.csv", newline="") as f:\n'
            '    total = sum(float(row["amount"]) for row in csv.DictReader(f))\n'
            "print(total)\n```\n\n"
            "`DictReader` reads the first line as the column names, so each row is a dictionary."
        ),
    ),
    (
        "And if some amounts are empty?",
        (
            "Skip them, or count them as zero:\n\n"
            "1. **Skip**: `sum(float(a) for a in amounts if a.strip())`\n"
            "2. **Zero**: `sum(float(a or 0) for a in amounts)`\n\n"
            "Skipping is safer when an empty cell means *unknown* rather than *nothing sold*."
        ),
    ),
    (
        "Thanks! Which is faster for a big file?",
        (
            "For a few million rows both are fine. Beyond that, **pandas** reads the file in C:\n\n"
            "| rows | csv module | pandas |\n| --- | --- | --- |\n"
            "| 1 million | 1.1 s | 0.3 s |\n| 10 million | 11 s | 2.6 s |\n\n"
            "Measure on your own file before switching: the numbers depend on the machine."
        ),
    ),
]
OTHER_TITLES = [
    "Moon formation basics",
    "Polite email to move a meeting",
    "Vegetarian dinner ideas",
]


def conversation_of_a_few_answers(owner: Any) -> Conversation:
    for minutes, title in enumerate(OTHER_TITLES, start=10):
        Conversation.objects.create(
            owner=owner, title=title, updated_at=timezone.now() - timedelta(minutes=minutes)
        )
    shown = Conversation.objects.create(owner=owner, title="Summing a CSV column in Python")
    parent = None
    for index, (prompt, answer) in enumerate(TURNS):
        parent = Message.objects.create(
            conversation=shown, parent=parent, role="user", content=prompt
        )
        parent = Message.objects.create(
            conversation=shown,
            parent=parent,
            role="assistant",
            content=answer,
            model_name="SmolLM2-135M-Instruct Q4_1",
            finish_reason="stop",
            prompt_tokens=40 + 120 * index,
            completion_tokens=60 + 10 * index,
            timings={"queue_ms": 3.0, "ttft_ms": 180.0 + index, "tokens_per_s": 41.7 - index},
        )
    return shown


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_it_takes_the_closing_notes_screenshots(
    browser: Browser, web_server: str, owner: Any, default_model: Any, theme: str
) -> None:
    conversation = conversation_of_a_few_answers(owner)
    preferences_theme_set(user_id=owner.pk, theme=theme)
    for size, options in SIZES.items():
        # The system says the other theme: the account's choice must win.
        context = browser.new_context(
            **options, color_scheme="light" if theme == "dark" else "dark"
        )
        page = context.new_page()
        log_in(page, web_server)
        page.goto(f"{web_server}/c/{conversation.pk}/")
        ready(page)
        expect(page.locator("html")).to_have_attribute("data-theme", theme)
        expect(page.locator("li.message.assistant")).to_have_count(len(TURNS))
        expect(page.locator("li.message.assistant pre code.hljs")).to_have_count(1)
        expect(page.locator("li.message.assistant table")).to_have_count(1)
        expect(page.locator("#chat-heading")).to_have_text(conversation.title)
        expect(page.get_by_label("Model", exact=True)).to_have_value(default_model.name)
        # Nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        page.locator("li.message.assistant").last.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"chat-{size}-{theme}.png"))
        context.close()
