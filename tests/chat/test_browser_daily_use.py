"""What a daily user of the chat page trips over (issue 17), in a real browser (chromium through
Playwright) against daphne: each test failed before its fix. Tests that need no answer written
use messages saved in the database, so they need no worker."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from chat.models import Conversation, Message, SystemPromptPreset
from inference.presence import WorkerState, worker_state_publish, worker_state_remove
from tests.chat import test_browser
from tests.chat.test_browser import log_in
from tests.chat.test_browser_sidebar import conversation_with, open_menu, ready, wait_until
from tests.chat.test_queue import wait_for_idle_workers
from tests.conftest import PASSWORD
from wizweb.redis_server import redis_connection

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

page = test_browser.page  # 1280 by 800, as the other browser tests have it


def phone_page(browser: Browser, web_server: str) -> Page:
    """A 390 by 844 touch screen (a phone), logged in as the owner."""
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    phone = context.new_page()
    log_in(phone, web_server)
    ready(phone)
    return phone


def answered(owner: Any, title: str, prompt: str, answer: str, **fields: Any) -> Conversation:
    """A conversation of one prompt and its finished answer."""
    conversation = Conversation.objects.create(owner=owner, title=title)
    question = Message.objects.create(conversation=conversation, role="user", content=prompt)
    Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content=answer,
        model_name="SmolLM2",
        **{"prompt_tokens": 20, "completion_tokens": 9, **fields},
    )
    return conversation


def test_an_answer_that_left_nothing_out_does_not_say_undefined_were_left_out(
    page: Page, web_server: str, owner: Any
) -> None:
    # Saved answers have `trimmed: {}` when nothing was left out (every answer after a reload).
    whole = answered(owner, "Whole", "Hi", "Hello there.", trimmed={})
    cut = answered(owner, "Cut", "Hi again", "Hello again.", trimmed={"turns": 3, "tokens": 700})
    log_in(page, web_server)
    page.goto(f"{web_server}/c/{whole.pk}/")
    ready(page)
    meta = page.locator("li.message.assistant .meta")
    expect(meta).to_contain_text("9 tokens")
    expect(meta).not_to_contain_text("left out")
    expect(meta).not_to_contain_text("undefined")
    page.goto(f"{web_server}/c/{cut.pk}/")
    expect(meta).to_contain_text("3 earlier messages left out to fit the context")


def test_enter_in_the_preset_dialog_saves_the_preset(
    page: Page, web_server: str, owner: Any
) -> None:
    log_in(page, web_server)
    ready(page)
    page.locator("#settings > summary").click()
    page.get_by_label("System prompt").fill("Answer like a pirate.")
    page.get_by_role("button", name="Save as preset…").click()
    name = page.get_by_label("Preset name")
    expect(name).to_be_focused()
    name.fill("Pirate")
    name.press("Enter")
    expect(page.locator("#settings-status")).to_have_text("Saved the preset “Pirate”.")
    expect(page.get_by_label("Preset", exact=True)).to_have_value(
        str(SystemPromptPreset.objects.get(owner=owner, name="Pirate").pk)
    )
    # Cancel still cancels.
    page.get_by_role("button", name="Save as preset…").click()
    page.get_by_label("Preset name").fill("Not this one")
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    assert not SystemPromptPreset.objects.filter(name="Not this one").exists()


def test_a_json_answer_keeps_its_indentation(page: Page, web_server: str, owner: Any) -> None:
    document = '{\n  "name": "Tom",\n  "age": 3,\n  "toys": [\n    "ball"\n  ]\n}'
    conversation = answered(owner, "Tom", "Tom as JSON", document)
    log_in(page, web_server)
    page.goto(f"{web_server}/c/{conversation.pk}/")
    ready(page)
    code = page.locator("li.message.assistant .content pre code")
    expect(code).to_have_count(1)
    assert code.inner_text().rstrip("\n") == document
    assert json.loads(code.inner_text()) == {"name": "Tom", "age": 3, "toys": ["ball"]}


def test_an_export_without_parents_imports_as_one_thread_with_its_settings(
    page: Page, web_server: str, owner: Any, tmp_path: Path
) -> None:
    answered(owner, "Moon", "An older chat", "With the same title.")
    export = {
        "title": "Moon",
        "settings": {"system_prompt": "Be brief.", "temperature": 0.2},
        "messages": [
            {"role": "user", "content": "What is the moon made of?"},
            {"role": "assistant", "content": "Rock and dust."},
        ],
    }
    path = tmp_path / "moon.json"
    path.write_text(json.dumps(export))
    log_in(page, web_server)
    ready(page)
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Import…").click()
    chooser.value.set_files(path)
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    ready(page)
    expect(page.locator("li.message.user .content")).to_have_text("What is the moon made of?")
    expect(page.locator("li.message.assistant .content")).to_have_text("Rock and dust.")
    expect(page.locator(".version-count")).to_have_count(0)
    expect(page.locator("#settings-summary")).to_contain_text("temperature 0.2")
    expect(page.locator("#settings-summary")).to_contain_text("system prompt")
    expect(page.locator("#conversation-list li.current a.title")).to_have_text("Moon (imported)")


def test_on_a_touch_screen_enter_makes_a_new_line_and_send_sends(
    browser: Browser, web_server: str, owner: Any, default_model: Any
) -> None:
    phone = phone_page(browser, web_server)
    box = phone.get_by_label("Message")
    expect(box).to_have_attribute("placeholder", "Send a message")
    box.click()
    phone.keyboard.type("first line")
    phone.keyboard.press("Enter")
    phone.keyboard.type("second line")
    expect(box).to_have_value("first line\nsecond line")
    expect(phone.locator("li.message")).to_have_count(0)


def test_the_api_keys_page_fits_a_phone_copies_the_key_and_asks_before_revoking(
    browser: Browser, web_server: str, owner: Any
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    phone = context.new_page()
    log_in(phone, web_server)
    phone.goto(f"{web_server}/account/keys/")
    assert phone.locator("a[href*='openai.com']").count() == 0
    phone.get_by_label("Name").fill("my editor")
    phone.get_by_role("button", name="Create key").click()
    key = phone.locator("#new-key")
    expect(key).to_be_visible()
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the keys page is {width} px wide on a 390 px screen"
    phone.get_by_role("button", name="Copy").click()
    expect(phone.locator("#copy-key-status")).to_have_text("Copied.")
    assert phone.evaluate("navigator.clipboard.readText()") == key.inner_text()

    revoke = phone.get_by_role("button", name="Revoke")
    revoke.scroll_into_view_if_needed()
    revoke.click()
    dialog = phone.get_by_role("dialog")
    expect(dialog).to_contain_text("Revoke the key “my editor”?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(phone.locator("table.keys")).to_contain_text("active")
    assert owner.api_keys.get().is_active
    revoke.click()
    dialog.get_by_role("button", name="Revoke").click()
    expect(phone.locator("table.keys")).to_contain_text("revoked")
    assert not owner.api_keys.get().is_active


def test_a_prompt_too_long_for_the_model_is_not_sent_unless_asked(
    page: Page, web_server: str, owner: Any, default_model: Any
) -> None:
    log_in(page, web_server)
    ready(page)
    box = page.get_by_label("Message")
    box.fill("many words here " * 1900)  # about 8,700 tokens by the meter's estimate
    expect(page.locator("#context-warning")).to_have_attribute("data-level", "error")
    box.press("Enter")
    status = page.locator("#status")
    expect(status).to_contain_text("Not sent: This message is about")
    expect(status.get_by_role("button", name="Send anyway")).to_be_visible()
    expect(page.locator("li.message")).to_have_count(0)
    assert box.input_value().startswith("many words here")
    assert not Conversation.objects.filter(owner=owner).exists()


def test_a_long_prompt_is_folded_until_shown_all(page: Page, web_server: str, owner: Any) -> None:
    pasted = "\n".join(f"log line {i}: something happened" for i in range(1000))  # 33 KB
    conversation = answered(owner, "Logs", pasted, "That is a long log.")
    log_in(page, web_server)
    page.goto(f"{web_server}/c/{conversation.pk}/")
    ready(page)
    prompt = page.locator("li.message.user")
    folded = prompt.bounding_box()
    assert folded is not None and folded["height"] < 600, folded
    show = prompt.get_by_role("button", name="Show all (1,000 lines)")
    expect(show).to_have_attribute("aria-expanded", "false")
    show.click()
    expect(prompt.get_by_role("button", name="Show less")).to_have_attribute(
        "aria-expanded", "true"
    )
    unfolded = prompt.bounding_box()
    assert unfolded is not None and unfolded["height"] > 5 * folded["height"]


def test_the_rename_box_replaces_the_title_on_the_same_line_as_its_button(
    page: Page, web_server: str, owner: Any
) -> None:
    conversation_with(owner, "A title long enough to fill the whole row of the sidebar", "hi")
    log_in(page, web_server)
    ready(page)
    title = "A title long enough to fill the whole row of the sidebar"
    open_menu(page, title)
    page.get_by_role("button", name="Rename").click()
    box = page.get_by_label(f"New title for {title}")
    expect(box).to_be_focused()
    expect(page.get_by_role("link", name=title)).to_be_hidden()
    button = page.get_by_role("button", name=f"Actions for {title}").bounding_box()
    field = box.bounding_box()
    assert button is not None and field is not None
    # One row: the button's middle is within the box's height, and it is right of the box.
    middle = button["y"] + button["height"] / 2
    assert field["y"] <= middle <= field["y"] + field["height"], (field, button)
    assert button["x"] >= field["x"] + field["width"] - 1


def test_the_keyboard_and_screen_readers_get_to_the_message_box(
    page: Page, web_server: str, owner: Any
) -> None:
    for i in range(5):
        conversation_with(owner, f"Chat {i}", "hello")
    log_in(page, web_server)
    ready(page)
    box = page.get_by_label("Message")
    expect(box).to_be_focused()
    # The skip link is the page's first stop, before the top bar's links.
    page.get_by_role("link", name="Wiz Web").focus()
    page.keyboard.press("Shift+Tab")
    skip = page.get_by_role("link", name="Skip to the message box")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(box).to_be_focused()
    expect(page.get_by_role("heading", level=1)).to_have_text("New chat")
    expect(page.get_by_role("heading", name="Conversations", level=2)).to_be_attached()
    expect(page.get_by_role("heading", name="Messages", level=2)).to_be_attached()
    # A streaming answer is not re-announced at every chunk: the list is not a live region.
    assert page.locator("#messages").get_attribute("aria-live") is None
    expect(page.locator("#announcer")).to_have_attribute("aria-live", "polite")


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_a_prompt_sent_while_an_answer_is_written_is_queued_and_sent_when_it_ends(
    browser: Browser, web_server: str, owner: Any, default_model: Any, phone: bool
) -> None:
    # An answer still waiting, as when its worker is busy: the page shows it unfinished.
    conversation = Conversation.objects.create(owner=owner, title="Busy")
    question = Message.objects.create(conversation=conversation, role="user", content="Hi")
    waiting = Message.objects.create(
        conversation=conversation, parent=question, role="assistant", state="queued"
    )
    if phone:
        page = phone_page(browser, web_server)
    else:
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        log_in(page, web_server)
    page.goto(f"{web_server}/c/{conversation.pk}/")
    ready(page)
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_visible()
    box = page.get_by_label("Message")
    strip = page.locator("#queued-prompt")

    def queue(text: str) -> None:
        box.fill(text)
        if phone:  # Enter is a new line on a touch screen: Send queues.
            page.get_by_role("button", name="Send", exact=True).click()
        else:
            box.press("Enter")

    queue("And another thing")
    expect(strip).to_be_visible()
    expect(strip).to_contain_text("Queued, sent when the answer ends: “And another thing”")
    expect(box).to_have_value("")
    # One waits at a time: a second stays in the box, and says why.
    queue("A third thing")
    expect(page.locator("#status")).to_contain_text("A prompt is already queued")
    expect(box).to_have_value("A third thing")
    # Cancelled, it comes back to an empty box.
    box.fill("")
    page.get_by_role("button", name="Cancel it").click()
    expect(strip).to_be_hidden()
    expect(box).to_have_value("And another thing")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"]  # type: ignore[index]

    # Queued again, it goes when the answer ends (here: stopped), under that answer.
    queue("And another thing")
    expect(strip).to_be_visible()
    stop.click()
    expect(strip).to_be_hidden()
    expect(page.locator("li.message.user").last).to_contain_text("And another thing")
    wait_until(
        lambda: Message.objects.filter(
            conversation=conversation, role="user", content="And another thing", parent=waiting
        ).exists()
    )
    expect(box).to_have_value("")


def test_a_conversation_deleted_on_another_page_leaves_the_page_showing_it(
    page: Page, web_server: str, owner: Any
) -> None:
    doomed = conversation_with(owner, "Doomed", "hello", "hi")
    conversation_with(owner, "Other", "one")
    log_in(page, web_server)
    page.goto(f"{web_server}/c/{doomed.pk}/")
    ready(page)
    other = page.context.new_page()
    other.goto(f"{web_server}/")
    ready(other)
    open_menu(other, "Doomed")
    other.get_by_role("button", name="Delete", exact=True).click()
    other.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(other.get_by_role("link", name="Doomed")).to_have_count(0)
    expect(page).to_have_url(f"{web_server}/")
    ready(page)
    expect(page.get_by_role("link", name="Doomed")).to_have_count(0)
    expect(page.get_by_role("link", name="Other")).to_be_visible()


def test_small_things_read_right(page: Page, web_server: str, owner: Any) -> None:
    conversation_with(owner, "Garden plans", "tomatoes")
    # The login card is as wide with its error line as without.
    page.goto(f"{web_server}/accounts/login/")
    before = page.locator("main.login").bounding_box()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    after = page.locator("main.login").bounding_box()
    assert before is not None and after is not None and before["width"] == after["width"]
    # A favicon, named by the page and at /favicon.ico.
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert icon and page.request.get(f"{web_server}{icon}").status == 200
    assert page.request.get(f"{web_server}/favicon.ico").status == 200

    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    ready(page)
    page.get_by_label("Search conversations").fill("tomatoes")
    expect(page.locator("#search-status")).to_have_text("1 conversation matches “tomatoes”.")


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_a_waiting_answer_shows_its_place_and_an_estimated_wait(
    browser: Browser, web_server: str, owner: Any, default_model: Any, phone: bool
) -> None:
    # Two answers written before (100 and 200 tokens) and a worker measured at 10 tokens/s:
    # 15 s an answer, so the first place waits about 15 s.
    before = Conversation.objects.create(owner=owner, title="Before")
    for length in (100, 200):
        Message.objects.create(
            conversation=before, role="assistant", state="done", completion_tokens=length
        )
    conversation = Conversation.objects.create(owner=owner, title="Busy")
    question = Message.objects.create(conversation=conversation, role="user", content="Hi")
    Message.objects.create(
        conversation=conversation, parent=question, role="assistant", state="queued"
    )
    connection = redis_connection()
    wait_for_idle_workers()
    worker_state_publish(connection, WorkerState(name="measured", host="h", pid=1, tokens_per_s=10))
    try:
        if phone:
            page = phone_page(browser, web_server)
        else:
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            log_in(page, web_server)
        page.goto(f"{web_server}/c/{conversation.pk}/")
        ready(page)
        answer = page.locator("li.message.assistant").last
        expect(answer.locator(".meta")).to_have_text(
            "Waiting in the queue (position 1, about 15 s)…"
        )
        expect(answer.locator(".meta")).to_be_in_viewport()
    finally:
        worker_state_remove(connection, "measured")
