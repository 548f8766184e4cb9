"""The message area of the chat page in a real browser against daphne and a real worker: stop,
regenerate and versions, edit and resend, a reload in mid-answer, the connection dropping, the
context meter, and the phone layout."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, WebSocket, WebSocketRoute, expect

from chat.models import Conversation, Message
from tests.browser import ARTIFACTS
from tests.chat.test_browser import log_in, markdown_words, page, shown_words
from tests.conftest import SECOND_MODEL

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

__all__ = ["page"]  # the fixture, imported to be used here

LONG_ANSWER = {"seed": 3, "temperature": 0.7, "max_tokens": 400}
SHORT_ANSWER = {"max_tokens": 24}
LONG_PROMPT = "Write a long story about a dragon who learns to bake bread, in many paragraphs."


def open_conversation(page: Page, base_url: str, owner: Any, settings: dict[str, Any]) -> str:
    """A new conversation with these settings (sent as options with every prompt), opened."""
    conversation = Conversation.objects.create(owner=owner, title="Test", settings=settings)
    log_in(page, base_url)
    page.goto(f"{base_url}/c/{conversation.id}/")
    expect(page.locator("body[data-connected=true]")).to_be_attached(timeout=15_000)
    return str(conversation.id)


def send(page: Page, text: str) -> Locator:
    """Send a prompt; the answer's list item."""
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")
    answer = page.locator("li.message.assistant").last
    expect(answer).to_have_attribute("data-message", re.compile(".+"))
    return answer


def saved(answer: Locator) -> Message:
    return Message.objects.get(pk=answer.get_attribute("data-message"))


def assert_shows(answer: Locator, message: Message) -> None:
    assert shown_words(answer.locator(".content").inner_text()) == markdown_words(message.content)


def test_it_stops_an_answer_and_keeps_the_partial_text(
    page: Page, web_server: str, owner: Any, inference_worker: Any
) -> None:
    open_conversation(page, web_server, owner, LONG_ANSWER)
    answer = send(page, LONG_PROMPT)
    expect(answer.locator(".content")).not_to_be_empty(timeout=60_000)
    stop = page.get_by_role("button", name="Stop")
    # Send queues the next prompt while an answer is written (tests/chat/test_browser_daily_use.py).
    expect(page.get_by_role("button", name="Send", exact=True)).to_have_attribute(
        "title", "Queued: sent when the answer ends"
    )
    stop.click()

    expect(answer).to_have_attribute("data-state", "aborted", timeout=10_000)
    expect(stop).to_be_hidden()
    message = saved(answer)
    assert message.state == Message.State.ABORTED
    assert message.content.strip(), "the partial answer was not kept"
    assert message.usage["completion_tokens"] < LONG_ANSWER["max_tokens"]
    assert_shows(answer, message)
    expect(answer.locator(".meta")).to_contain_text("stopped")
    page.reload()
    assert_shows(page.locator("li.message.assistant").last, message)


def test_it_regenerates_an_answer_and_switches_between_the_versions(
    page: Page, web_server: str, owner: Any, inference_worker: Any
) -> None:
    open_conversation(page, web_server, owner, SHORT_ANSWER)
    answer = send(page, "Name a fruit.")
    expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    first = saved(answer)
    expect(answer.locator(".meta")).to_contain_text("tok/s")
    expect(answer.locator(".meta")).to_contain_text("first token")
    expect(answer.locator(".meta")).to_contain_text(f"{first.usage['completion_tokens']} tokens")

    answer.get_by_role("button", name="Write this answer again").click()
    latest = page.locator("li.message.assistant").last
    expect(latest).not_to_have_attribute("data-message", str(first.id))
    expect(latest).to_have_attribute("data-state", "done", timeout=60_000)
    second = saved(latest)
    assert second.parent_id == first.parent_id
    expect(latest.locator(".version-count")).to_have_text("2/2")
    assert_shows(latest, second)

    latest.get_by_role("button", name="Previous answer").click()
    shown = page.locator("li.message.assistant").last
    expect(shown).to_have_attribute("data-message", str(first.id))
    expect(shown.locator(".version-count")).to_have_text("1/2")
    assert_shows(shown, first)
    shown.get_by_role("button", name="Next answer").click()
    expect(page.locator("li.message.assistant").last).to_have_attribute(
        "data-message", str(second.id)
    )

    # A follow-up goes under the version shown, and both versions survive a reload.
    page.locator("li.message.assistant").last.get_by_role("button", name="Previous answer").click()
    follow_up = send(page, "And a vegetable?")
    expect(follow_up).to_have_attribute("data-state", "done", timeout=60_000)
    assert saved(follow_up).parent.parent_id == first.id
    page.reload()
    expect(page.locator("li.message.assistant")).to_have_count(2)
    expect(page.locator("li.message.assistant").first).to_have_attribute(
        "data-message", str(first.id)
    )


def test_it_edits_a_prompt_and_sends_it_again_keeping_the_old_branch(
    page: Page, web_server: str, owner: Any, inference_worker: Any
) -> None:
    open_conversation(page, web_server, owner, SHORT_ANSWER)
    answer = send(page, "Name a colour.")
    expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    old_answer = saved(answer)

    page.locator("li.message.user").last.get_by_role("button", name="Edit this prompt").click()
    editor = page.get_by_label("Edited prompt")
    expect(editor).to_be_focused()
    editor.fill("Name an animal.")
    editor.press("Enter")
    new_answer = page.locator("li.message.assistant").last
    expect(new_answer).not_to_have_attribute("data-message", str(old_answer.id))
    expect(new_answer).to_have_attribute("data-state", "done", timeout=60_000)
    prompt = page.locator("li.message.user").last
    expect(prompt.locator(".content")).to_have_text("Name an animal.")
    expect(prompt.locator(".version-count")).to_have_text("2/2")
    edited = saved(new_answer).parent
    assert edited.content == "Name an animal."
    assert edited.parent_id == old_answer.parent.parent_id

    prompt.get_by_role("button", name="Previous prompt").click()
    expect(page.locator("li.message.user").last.locator(".content")).to_have_text("Name a colour.")
    expect(page.locator("li.message.assistant").last).to_have_attribute(
        "data-message", str(old_answer.id)
    )


def test_it_goes_on_with_a_streaming_answer_after_a_reload_without_gap_or_repeat(
    page: Page, web_server: str, owner: Any, inference_worker: Any
) -> None:
    received: list[dict[str, Any]] = []

    def watch(socket: WebSocket) -> None:
        socket.on("framereceived", lambda payload: received.append(json.loads(payload)))

    open_conversation(page, web_server, owner, LONG_ANSWER)
    answer = send(page, LONG_PROMPT)
    expect(answer.locator(".content")).not_to_be_empty(timeout=60_000)
    message_id = answer.get_attribute("data-message")

    page.on("websocket", watch)
    page.reload()
    assert Message.objects.get(pk=message_id).state == Message.State.RUNNING, (
        "the answer finished before the reload; make it longer"
    )
    answer = page.locator(f'li.message.assistant[data-message="{message_id}"]')
    expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    message = Message.objects.get(pk=message_id)
    chunks = [f for f in received if f["type"] == "chunk" and f["message"] == message_id]
    assert [c["seq"] for c in chunks] == list(range(1, len(chunks) + 1))
    assert "".join(c["text"] for c in chunks) == message.content
    assert_shows(answer, message)


def test_it_shows_an_offline_banner_and_resumes_the_answer_when_back(
    page: Page, web_server: str, owner: Any, inference_worker: Any
) -> None:
    # Every socket of the page goes through this proxy, so the test can cut one as a network would.
    sockets: list[WebSocketRoute] = []

    def through_proxy(route: WebSocketRoute) -> None:
        route.connect_to_server()
        sockets.append(route)

    page.route_web_socket(re.compile(r"/ws/chat/$"), through_proxy)
    open_conversation(page, web_server, owner, LONG_ANSWER)
    answer = send(page, LONG_PROMPT)
    expect(answer.locator(".content")).not_to_be_empty(timeout=60_000)
    banner = page.get_by_role("alert").filter(has_text="Offline")
    expect(banner).to_be_hidden()

    sockets[-1].close(code=4000, reason="the test cut the connection")
    expect(banner).to_be_visible()
    expect(page.locator("body[data-connected=true]")).to_be_attached(timeout=10_000)
    expect(banner).to_be_hidden()
    expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    assert_shows(answer, saved(answer))


def test_it_meters_the_context_and_warns_before_a_prompt_would_not_fit(
    page: Page, web_server: str, owner: Any, inference_worker: Any
) -> None:
    open_conversation(page, web_server, owner, SHORT_ANSWER)
    answer = send(page, "Say yes.")
    expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    used = saved(answer).usage["total_tokens"]
    expect(page.locator("#context-text")).to_have_text(f"{used} of 8,192 tokens")
    expect(page.locator("#context-meter")).to_have_attribute("value", str(used))

    page.get_by_label("Message", exact=True).fill("word " * 7000)
    warning = page.locator("#context-warning")
    expect(warning).to_have_attribute("data-level", "error")
    expect(warning).to_contain_text("shorten it")
    page.get_by_label("Message", exact=True).fill("A short question.")
    expect(warning).to_be_empty()


def test_it_is_usable_on_a_phone(
    page: Page, web_server: str, owner: Any, inference_worker: Any
) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    open_conversation(page, web_server, owner, SHORT_ANSWER)
    answer = send(page, "Name a planet.")
    expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    for control in (
        page.get_by_label("Message", exact=True),
        page.get_by_role("button", name="Send", exact=True),
    ):
        expect(control).to_be_in_viewport()
        box = control.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    page.screenshot(path=str(ARTIFACTS / "chat-phone-answer.png"))
    page.set_viewport_size({"width": 1280, "height": 800})
    page.screenshot(path=str(ARTIFACTS / "chat-desktop-answer.png"))


def test_it_sends_with_enter_breaks_lines_with_shift_enter_and_is_usable_by_keyboard(
    page: Page, web_server: str, owner: Any, inference_worker: Any
) -> None:
    open_conversation(page, web_server, owner, SHORT_ANSWER)
    box = page.get_by_label("Message", exact=True)
    box.focus()
    page.keyboard.type("Two")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("lines")
    expect(box).to_have_value("Two\nlines")
    expect(page.locator("li.message")).to_have_count(0)
    page.keyboard.press("Enter")
    answer = page.locator("li.message.assistant").last
    expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    expect(page.locator("li.message.user .content")).to_have_text("Two\nlines")

    box.focus()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_focused()
    # The message tools come before the message box in the page, and are reached by Shift+Tab.
    box.focus()
    for _ in range(8):
        page.keyboard.press("Shift+Tab")
        if answer.get_by_role("button", name="Write this answer again").evaluate(
            "button => button === document.activeElement"
        ):
            break
    else:
        raise AssertionError("Regenerate cannot be reached with the keyboard")
    page.keyboard.press("Enter")
    expect(page.locator("li.message.assistant .version-count")).to_have_text("2/2", timeout=60_000)


def test_a_conversation_written_to_moves_to_the_top_of_the_sidebar(
    page: Page, web_server: str, owner: Any, inference_worker: Any
) -> None:
    older = open_conversation(page, web_server, owner, SHORT_ANSWER)
    newer = Conversation.objects.create(owner=owner, title="Newer")
    page.reload()
    expect(page.locator("body[data-connected=true]")).to_be_attached(timeout=15_000)
    entries = page.locator("#conversation-list li[data-conversation]")
    expect(entries.first).to_have_attribute("data-conversation", str(newer.id))
    answer = send(page, "Name a tree.")
    expect(entries.first).to_have_attribute("data-conversation", older)
    expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    page.reload()
    expect(entries.first).to_have_attribute("data-conversation", older)


def waiting_at(position: int) -> re.Pattern[str]:
    """The line of an answer waiting at that place, with the estimated wait once the worker's
    speed is measured (its exact value is the services tests')."""
    return re.compile(rf"^Waiting in the queue \(position {position}(, about \d+ (s|min))?\)…$")


def test_a_waiting_answer_shows_its_place_in_the_queue(
    page: Page, web_server: str, owner: Any, serial_pinned_worker: Any
) -> None:
    # One worker with one slot: while it writes the first answer, the next two wait, each in
    # its own tab.
    long_answer = {**LONG_ANSWER, "model": SECOND_MODEL}
    open_conversation(page, web_server, owner, long_answer)
    tabs = [page]
    for settings in (long_answer, {**SHORT_ANSWER, "model": SECOND_MODEL}):
        tab = page.context.new_page()
        conversation = Conversation.objects.create(owner=owner, title="Test", settings=settings)
        tab.goto(f"{web_server}/c/{conversation.id}/")
        expect(tab.locator("body[data-connected=true]")).to_be_attached(timeout=15_000)
        tabs.append(tab)
    first = send(tabs[0], LONG_PROMPT)
    expect(first).to_have_attribute("data-state", "running", timeout=60_000)
    second = send(tabs[1], LONG_PROMPT)
    expect(second.locator(".meta")).to_have_text(waiting_at(1))
    third = send(tabs[2], "Name a planet.")
    expect(third.locator(".meta")).to_have_text(waiting_at(2))

    # A page opened while the answer waits learns its place at once.
    tabs[2].reload()
    third = tabs[2].locator("li.message.assistant").last
    expect(third.locator(".meta")).to_have_text(waiting_at(2))

    # Places move up as the answers ahead end.
    tabs[0].get_by_role("button", name="Stop").click()
    expect(first).to_have_attribute("data-state", "aborted", timeout=10_000)
    expect(third.locator(".meta")).to_have_text(waiting_at(1))
    expect(second).to_have_attribute("data-state", "running", timeout=10_000)
    tabs[1].get_by_role("button", name="Stop").click()
    expect(third).to_have_attribute("data-state", "done", timeout=60_000)
    expect(third.locator(".meta")).to_contain_text("tok/s")
