"""The chat page in a real browser (Debian's chromium through Playwright) against daphne and a
real worker: log in, send a prompt, watch it stream, reload and find it again."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, WebSocket, expect

from tests.browser import ARTIFACTS
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def page(owner: Any, default_model: Any, browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context.new_page()
    context.close()


def shown_words(text: str) -> list[str]:
    """The words of text as the page shows it (letters and digits; punctuation, whitespace and
    underscores only separate them)."""
    return re.findall(r"[^\W_]+", text)


def markdown_words(text: str) -> list[str]:
    """The words a reader should see when the page renders text as markdown: the same words,
    less what markdown spends on structure rather than shows (list numbers, link targets, a code
    fence's language, task-list boxes, link definitions). Rendering changes whitespace and drops
    markup characters, so answers are compared word by word."""
    text = re.sub(r"^[ \t]*(?:```|~~~)[^\n]*", " ", text, flags=re.M)
    text = _without_list_numbers(text)
    text = re.sub(r"^([ \t>]*[-*+][ \t]+)\[[ xX]\]", r"\1 ", text, flags=re.M)
    text = re.sub(r"^[ \t]*\[[^\]\n]+\]:[ \t]*\S+.*$", " ", text, flags=re.M)
    text = re.sub(r"\]\([^)\s]*(?:\s+\"[^\"]*\")?\)", "] ", text)
    return shown_words(text)


_ORDERED = re.compile(r"^([ \t>]*)(\d{1,9})[.)](?=[ \t]|$)")
_ITEM = re.compile(r"^[ \t>]*(?:\d{1,9}[.)]|[-*+])(?:[ \t]|$)")


def _without_list_numbers(text: str) -> str:
    """The text less the numbers of its ordered list items. As in CommonMark, a numbered line
    right after a paragraph's line starts a list only if it is "1." with something after it;
    otherwise ("2. …", or a bare "1." that a short answer ended on) it is paragraph text and
    its number is shown."""
    original = text.split("\n")
    lines = list(original)
    for index, line in enumerate(original):
        match = _ORDERED.match(line)
        if match is None:
            continue
        before = original[index - 1] if index else ""
        in_paragraph = before.strip() != "" and not _ITEM.match(before)
        empty = not line[match.end() :].strip()
        if in_paragraph and (empty or match.group(2) != "1"):
            continue
        lines[index] = match.group(1) + " " + line[match.end() :]
    return "\n".join(lines)


def log_in(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_label("Message")).to_be_visible()


def test_it_streams_an_answer_and_keeps_it_after_a_reload(
    page: Page, web_server: str, inference_worker: Any
) -> None:
    received: list[dict[str, Any]] = []
    arrival: list[float] = []

    def watch(socket: WebSocket) -> None:
        def on_frame(payload: str | bytes) -> None:
            received.append(json.loads(payload))
            arrival.append(time.perf_counter())

        socket.on("framereceived", on_frame)

    page.on("websocket", watch)
    log_in(page, web_server)
    expect(page.locator("body[data-connected=true]")).to_be_attached()

    prompt = page.get_by_label("Message")
    prompt.fill("Write two sentences about the moon.")
    sent_at = time.perf_counter()
    prompt.press("Enter")

    answer = page.locator("li.message.assistant").last
    expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    shown = answer.locator(".content").inner_text()
    chunks = [f for f in received if f["type"] == "chunk"]
    done = next(f for f in received if f["type"] == "done")
    assert len(chunks) >= 2, "the answer arrived in one piece, not streamed"
    assert "".join(c["text"] for c in chunks) == done["content"]
    assert shown.strip()
    assert shown_words(shown) == markdown_words(done["content"])
    meta = answer.locator(".meta").inner_text()
    assert f"{done['usage']['completion_tokens']} tokens" in meta

    first_chunk_at = arrival[received.index(chunks[0])]
    print(
        f"\nbrowser: time to first token {(first_chunk_at - sent_at) * 1000:.0f} ms, "
        f"{done['timings']['tokens_per_s']:.1f} tokens/s on the worker"
    )
    page.screenshot(path=str(ARTIFACTS / "chat-desktop.png"), full_page=True)

    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    page.reload()
    again = page.locator("li.message.assistant").last
    expect(again).to_have_attribute("data-state", "done")
    assert shown_words(again.locator(".content").inner_text()) == markdown_words(done["content"])
    expect(page.locator("li.message.user .content").last).to_have_text(
        "Write two sentences about the moon."
    )
    expect(page.locator("#conversation-list li.current")).to_contain_text("Write two sentences")

    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(ARTIFACTS / "chat-phone.png"), full_page=True)
    expect(page.get_by_label("Message")).to_be_visible()


def test_it_shows_html_in_model_output_as_text(
    page: Page, web_server: str, inference_worker: Any
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, web_server)
    expect(page.locator("body[data-connected=true]")).to_be_attached()
    xss = "<img src=x onerror=alert(1)> say hi"
    prompt = page.get_by_label("Message")
    prompt.fill(xss)
    prompt.press("Enter")
    expect(page.locator("li.message.assistant").last).to_have_attribute(
        "data-state", "done", timeout=60_000
    )
    expect(page.locator("li.message.user .content").last).to_have_text(xss)
    page.reload()
    expect(page.locator("li.message.user .content").last).to_have_text(xss)
    assert page.locator("li.message img").count() == 0
    assert dialogs == []
