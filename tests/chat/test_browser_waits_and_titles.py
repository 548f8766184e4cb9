"""Two comforts of issue 17 that need the model, in a real browser (chromium through Playwright)
against daphne and a real worker: the title the model writes after the first answer reaching
the page live, and how far a long prompt has been read while the page waits for its answer."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from chat.models import Conversation
from chat.submission import _title_from
from tests.chat import test_browser
from tests.chat.test_browser import log_in
from tests.chat.test_browser_sidebar import ready
from tests.chat.test_consumer import pasted_document
from tests.conftest import SECOND_MODEL

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

page = test_browser.page  # 1280 by 800, as the other browser tests have it

MOON = "What is the Moon made of, and how did it form? Tell me in two sentences."


def test_the_models_title_reaches_the_sidebar_and_the_heading_without_a_reload(
    page: Page, web_server: str, owner: Any, titling_worker: Any
) -> None:
    log_in(page, web_server)
    ready(page)
    page.get_by_label("Model", exact=True).select_option(SECOND_MODEL)
    box = page.get_by_label("Message")
    box.fill(MOON)
    box.press("Enter")
    answer = page.locator("li.message.assistant").last
    expect(answer).to_have_attribute("data-state", "done", timeout=120_000)
    first_words = _title_from(MOON)
    entry = page.locator("#conversation-list li.current a.title")
    expect(entry).not_to_have_text(first_words, timeout=120_000)
    conversation = Conversation.objects.get(owner=owner)
    assert conversation.title != first_words and not conversation.title_by_user
    expect(entry).to_have_text(conversation.title)
    expect(page.locator("#chat-heading")).to_have_text(conversation.title)
    expect(page).to_have_title(f"{conversation.title} · Wiz Web")
    page.reload()
    ready(page)
    expect(entry).to_have_text(conversation.title)
    expect(page.locator("#chat-heading")).to_have_text(conversation.title)


# Every text the answers' meta lines showed, as they showed it: the reading's progress lasts a
# few seconds, so the page keeps a record instead of the test polling for it.
RECORD_META = """
window.metaSeen = [];
new MutationObserver((changes) => {
  for (const change of changes) {
    const meta = change.target.closest?.(".meta") || change.target.parentElement?.closest(".meta");
    if (meta) window.metaSeen.push(meta.textContent);
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


def test_a_long_prompt_shows_how_far_it_has_been_read_then_the_answer(
    page: Page, web_server: str, owner: Any, default_model: Any, inference_worker: Any
) -> None:
    page.add_init_script(RECORD_META)
    log_in(page, web_server)
    ready(page)
    box = page.get_by_label("Message")
    box.fill(pasted_document(80, "the browser's harbour"))
    box.press("Enter")
    answer = page.locator("li.message.assistant").last
    expect(answer).to_have_attribute("data-state", "done", timeout=300_000)
    seen: list[str] = page.evaluate("window.metaSeen")
    reading = [
        text for text in seen if re.fullmatch(r"Reading the prompt… [\d,]+ of [\d,]+ tokens", text)
    ]
    assert reading, seen
    counts = [int(text.split()[3].replace(",", "")) for text in reading]
    total = int(reading[-1].split()[5].replace(",", ""))
    assert counts == sorted(counts) and counts[-1] == total > 2 * 512
    # Then the answer as usual: once its text comes the line says it is being written, and at
    # the end it has the answer's figures, no longer the reading.
    last_reading = max(i for i, text in enumerate(seen) if text in reading)
    assert any(text.endswith("is answering…") for text in seen[last_reading:]), seen
    assert answer.locator(".content").inner_text().strip()
    expect(answer.locator(".meta")).not_to_contain_text("Reading")
    expect(answer.locator(".meta")).to_contain_text("tokens")
