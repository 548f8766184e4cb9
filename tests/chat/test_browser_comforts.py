"""The chat page's comforts (issue 17), in a real browser (chromium through Playwright) against
daphne, at a desktop's 1440 by 900 and a phone's 390 by 844: dark mode, the message actions,
toasts, the growing message box and its shortcuts, the empty state and pinned conversations."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, WebSocket, expect

from chat.models import Conversation, Message, SystemPromptPreset
from tests.browser import ARTIFACTS
from tests.chat.test_browser import log_in
from tests.chat.test_browser_daily_use import answered as one_answer
from tests.chat.test_browser_settings import saved_settings
from tests.chat.test_browser_sidebar import open_menu, ready, wait_until
from tests.conftest import PASSWORD, SECOND_MODEL

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def context_for(browser: Browser, *, phone: bool = False, dark: bool = False) -> BrowserContext:
    return browser.new_context(
        viewport=PHONE if phone else DESKTOP,
        is_mobile=phone,
        has_touch=phone,
        color_scheme="dark" if dark else "light",
    )


def logged_in(context: BrowserContext, web_server: str, path: str = "/") -> Page:
    page = context.new_page()
    log_in(page, web_server)
    if path != "/":
        page.goto(f"{web_server}{path}")
    ready(page)
    return page


def background_lightness(page: Page, selector: str = "body") -> float:
    """The lightness (0 black to 1 white) of an element's computed background colour."""
    rgb = page.evaluate(
        """(selector) => getComputedStyle(document.querySelector(selector)).backgroundColor
            .match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number)""",
        selector,
    )
    return (max(rgb) + min(rgb)) / 2 / 255


def answered(owner: Any, title: str, prompt: str, answer: str) -> Conversation:
    return one_answer(owner, title, prompt, answer, prompt_tokens=12, completion_tokens=30)


CODE_ANSWER = (
    "Here is a **loop**:\n\n```python\nfor i in range(3):\n    print(i)  # count\n```\n\n"
    "It prints `0`, `1` and `2`."
)


def test_dark_mode_follows_the_system_and_the_toggle_is_remembered(
    browser: Browser, web_server: str, owner: Any, default_model: Any
) -> None:
    conversation = answered(owner, "Loops", "Show me a loop in Python.", CODE_ANSWER)
    path = f"/c/{conversation.pk}/"

    light = logged_in(context_for(browser), web_server, path)
    toggle = light.get_by_role("button", name="Dark mode")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    assert background_lightness(light) > 0.9
    light.screenshot(path=str(ARTIFACTS / "comforts-desktop-light.png"))

    phone = logged_in(context_for(browser, phone=True, dark=True), web_server, path)
    toggle = phone.get_by_role("button", name="Dark mode")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    assert background_lightness(phone) < 0.15
    assert background_lightness(phone, ".message.assistant") < 0.2
    assert background_lightness(phone, ".code-block") < 0.15
    # Code keeps its colours, readable on the dark block.
    keyword = phone.locator(".hljs-keyword").first
    colour = keyword.evaluate("(e) => getComputedStyle(e).color")
    assert colour == "rgb(255, 123, 114)", colour
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    phone.screenshot(path=str(ARTIFACTS / "comforts-phone-dark.png"))

    # The toggle overrides the system, and the choice is kept: a reload, a new page.
    with phone.expect_response(lambda response: "/account/theme/" in response.url):
        toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    assert background_lightness(phone) > 0.9
    phone.reload()
    ready(phone)
    expect(phone.locator("html")).to_have_attribute("data-theme", "light")
    expect(phone.get_by_role("button", name="Dark mode")).to_have_attribute("aria-pressed", "false")
    assert background_lightness(phone) > 0.9
    with phone.expect_response(lambda response: "/account/theme/" in response.url):
        phone.get_by_role("button", name="Dark mode").click()
    other = phone.context.new_page()
    other.goto(f"{web_server}/account/keys/")
    expect(other.locator("html")).to_have_attribute("data-theme", "dark")
    assert background_lightness(other) < 0.15


def test_the_dark_mode_choice_follows_the_user_to_another_browser(
    browser: Browser, web_server: str, owner: Any, outsider: Any, default_model: Any
) -> None:
    desktop = logged_in(context_for(browser), web_server)
    toggle = desktop.get_by_role("button", name="Dark mode")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    with desktop.expect_response(lambda response: "/account/theme/" in response.url) as saved:
        toggle.click()
    assert saved.value.ok

    # A phone with no cookie and a light system: the account's choice, from the first paint.
    phone_context = context_for(browser, phone=True)
    phone = logged_in(phone_context, web_server)
    assert not any(cookie["name"] == "wiz_theme" for cookie in phone_context.cookies())
    expect(phone.locator("html")).to_have_attribute("data-theme", "dark")
    expect(phone.get_by_role("button", name="Dark mode")).to_have_attribute("aria-pressed", "true")
    assert background_lightness(phone) < 0.15
    phone.screenshot(path=str(ARTIFACTS / "comforts-phone-dark-account.png"))

    # Someone else gets their own (the system's) theme.
    other = context_for(browser, phone=True).new_page()
    other.goto(f"{web_server}/")
    other.get_by_label("Username").fill(outsider.username)
    other.get_by_label("Password").fill(PASSWORD)
    other.get_by_role("button", name="Log in").click()
    ready(other)
    expect(other.get_by_role("button", name="Dark mode")).to_have_attribute("aria-pressed", "false")
    assert other.locator("html").get_attribute("data-theme") is None
    assert background_lightness(other) > 0.9


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_each_message_has_icon_actions_and_copy_gives_its_markdown(
    browser: Browser, web_server: str, owner: Any, default_model: Any, phone: bool
) -> None:
    conversation = answered(owner, "Loops", "Show me a loop in Python.", CODE_ANSWER)
    context = context_for(browser, phone=phone)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = logged_in(context, web_server, f"/c/{conversation.pk}/")
    answer = page.locator("li.message.assistant")
    prompt = page.locator("li.message.user")
    for item, names in (
        (prompt, ["Copy this prompt", "Edit this prompt and send it again"]),
        (answer, ["Copy this answer as markdown", "Write this answer again"]),
    ):
        buttons = item.locator(".message-tools button")
        expect(buttons).to_have_count(len(names))
        for index, name in enumerate(names):
            expect(buttons.nth(index)).to_have_accessible_name(name)
            expect(buttons.nth(index)).to_have_text("")  # an icon, named by its label
            expect(buttons.nth(index).locator("svg")).to_be_visible()

    answer.get_by_role("button", name="Copy this answer as markdown").click()
    toasts = page.locator("#toasts .toast")
    expect(toasts).to_have_text(["Copied the answer."])
    assert page.evaluate("navigator.clipboard.readText()") == CODE_ANSWER
    prompt.get_by_role("button", name="Copy this prompt").click()
    expect(toasts.last).to_have_text("Copied the prompt.")
    assert page.evaluate("navigator.clipboard.readText()") == "Show me a loop in Python."
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"]  # type: ignore[index]


def test_a_button_brings_back_the_newest_message_after_scrolling_up(
    browser: Browser, web_server: str, owner: Any, default_model: Any
) -> None:
    conversation = Conversation.objects.create(owner=owner, title="Long")
    parent = None
    for turn in range(12):
        parent = Message.objects.create(
            conversation=conversation, parent=parent, role="user", content=f"Question {turn}"
        )
        parent = Message.objects.create(
            conversation=conversation,
            parent=parent,
            role="assistant",
            content="\n\n".join(f"Paragraph {p} of answer {turn}." for p in range(6)),
            model_name="SmolLM2",
        )
    for phone in (False, True):
        page = logged_in(context_for(browser, phone=phone), web_server, f"/c/{conversation.pk}/")
        newest = page.get_by_text("Paragraph 5 of answer 11.")
        to_bottom = page.get_by_role("button", name="Scroll to the bottom")
        expect(newest).to_be_in_viewport()
        expect(to_bottom).to_be_hidden()
        page.locator("#messages").evaluate("(list) => list.scrollTo(0, 0)")
        expect(to_bottom).to_be_visible()
        expect(newest).not_to_be_in_viewport()
        to_bottom.click()
        expect(newest).to_be_in_viewport()
        expect(to_bottom).to_be_hidden()


def test_rename_and_delete_are_confirmed_by_a_toast(
    browser: Browser, web_server: str, owner: Any
) -> None:
    from tests.chat.test_browser_sidebar import conversation_with, open_menu

    conversation_with(owner, "First", "one")
    conversation_with(owner, "Second", "two")
    page = logged_in(context_for(browser), web_server)
    toasts = page.locator("#toasts .toast")
    open_menu(page, "First")
    page.get_by_role("button", name="Rename").click()
    page.get_by_label("New title for First").fill("Renamed")
    page.keyboard.press("Enter")
    expect(toasts.last).to_have_text("Renamed to “Renamed”.")
    open_menu(page, "Second")
    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(toasts.last).to_have_text("Deleted “Second”.")


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_the_message_box_grows_with_its_text_and_shrinks_when_sent(
    browser: Browser, web_server: str, owner: Any, default_model: Any, phone: bool
) -> None:
    page = logged_in(context_for(browser, phone=phone), web_server)
    box = page.get_by_label("Message", exact=True)

    def height() -> float:
        found = box.bounding_box()
        assert found is not None
        return found["height"]

    empty = height()
    box.fill("\n".join(f"line {i}" for i in range(8)))
    page.wait_for_function(
        "(h) => document.getElementById('prompt').offsetHeight > h * 2", arg=empty
    )
    grown = height()
    assert box.evaluate("(b) => b.scrollHeight <= b.clientHeight + 2")  # all of it shows
    box.fill("\n".join(f"line {i}" for i in range(200)))
    page.wait_for_function("(h) => document.getElementById('prompt').offsetHeight > h", arg=grown)
    assert height() <= page.viewport_size["height"] * 0.4 + 1  # type: ignore[index]
    box.fill("")
    page.wait_for_function("(h) => document.getElementById('prompt').offsetHeight <= h", arg=empty)
    expect(page.get_by_label("Message", exact=True)).to_be_in_viewport()


def test_keyboard_shortcuts_are_listed_by_question_mark_and_work(
    browser: Browser, web_server: str, owner: Any, default_model: Any
) -> None:
    conversation = Conversation.objects.create(owner=owner, title="Busy")
    question = Message.objects.create(conversation=conversation, role="user", content="Hi")
    answer = Message.objects.create(
        conversation=conversation, parent=question, role="assistant", state="queued"
    )
    page = context_for(browser).new_page()
    sockets: list[WebSocket] = []
    page.on("websocket", lambda socket: sockets.append(socket))
    log_in(page, web_server)
    page.goto(f"{web_server}/c/{conversation.pk}/")
    ready(page)

    page.get_by_role("link", name="Wiz Web").focus()  # outside a text box
    page.keyboard.press("?")
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("search conversations")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    # In the message box "?" is typed, not a shortcut.
    box = page.get_by_label("Message", exact=True)
    box.focus()
    page.keyboard.press("?")
    expect(box).to_have_value("?")
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Keyboard shortcuts (?)").click()
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Close").click()

    page.keyboard.press("Control+k")
    expect(page.get_by_label("Search conversations")).to_be_focused()
    page.keyboard.press("Shift+Escape")
    expect(box).to_be_focused()
    # Esc in the message box stops the answer being written.
    abort = {"type": "abort", "message": str(answer.pk)}
    with sockets[-1].expect_event("framesent", lambda payload: json.loads(payload) == abort):
        page.keyboard.press("Escape")
    page.keyboard.press("Control+Shift+O")
    expect(page).to_have_url(f"{web_server}/")


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_the_header_has_the_model_picker_and_new_chat_and_settings_open_over_the_messages(
    browser: Browser,
    web_server: str,
    owner: Any,
    default_model: Any,
    second_model: Any,
    phone: bool,
) -> None:
    conversation = answered(owner, "Loops", "Show me a loop in Python.", CODE_ANSWER)
    page = logged_in(context_for(browser, phone=phone), web_server, f"/c/{conversation.pk}/")
    picker = page.get_by_label("Model", exact=True)
    new_chat = page.locator(".chat-header").get_by_role("link", name="New chat")
    settings = page.locator("#settings > summary")
    rows = []
    for control in (picker, settings, new_chat):
        expect(control).to_be_visible()
        box = control.bounding_box()
        assert box is not None
        rows.append(box["y"] + box["height"] / 2)
    assert max(rows) - min(rows) < 8, f"the header's controls are not on one line: {rows}"
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"]  # type: ignore[index]

    picker.select_option(SECOND_MODEL)
    wait_until(lambda: saved_settings(conversation.pk) == {"model": SECOND_MODEL})

    first = page.locator("li.message.user")
    before = first.bounding_box()
    settings.click()
    expect(page.get_by_label("Temperature")).to_be_visible()
    assert first.bounding_box() == before  # opened over the messages, not above them
    page.screenshot(path=str(ARTIFACTS / f"comforts-header-{'phone' if phone else 'desktop'}.png"))
    settings.click()
    expect(page.get_by_label("Temperature")).to_be_hidden()
    new_chat.click()
    expect(page).to_have_url(f"{web_server}/")


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_a_preset_marked_as_default_starts_every_new_chat(
    browser: Browser, web_server: str, owner: Any, default_model: Any, phone: bool
) -> None:
    SystemPromptPreset.objects.create(owner=owner, name="Brief", text="Answer in one line.")
    SystemPromptPreset.objects.create(owner=owner, name="Pirate", text="Talk like a pirate.")
    conversation = answered(owner, "Loops", "Show me a loop in Python.", CODE_ANSWER)
    page = logged_in(context_for(browser, phone=phone), web_server, f"/c/{conversation.pk}/")
    page.locator("#settings > summary").click()
    mark = page.get_by_label("Start new chats with it")
    expect(mark).to_be_disabled()  # no preset chosen
    page.get_by_label("Preset", exact=True).select_option(label="Pirate")
    expect(mark).not_to_be_checked()
    with page.expect_response(lambda response: "/api/presets/" in response.url) as saved:
        mark.check()
    assert saved.value.ok
    expect(page.locator("#settings-status")).to_have_text(
        "New chats start with the preset “Pirate”."
    )
    page.locator(".chat-header").get_by_role("link", name="New chat").click()
    expect(page).to_have_url(f"{web_server}/")
    ready(page)
    if not page.get_by_label("System prompt").is_visible():
        page.locator("#settings > summary").click()
    expect(page.get_by_label("System prompt")).to_have_value("Talk like a pirate.")
    expect(page.get_by_label("Preset", exact=True)).to_have_value(
        str(SystemPromptPreset.objects.get(name="Pirate").pk)
    )
    expect(page.get_by_label("Start new chats with it")).to_be_checked()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"]  # type: ignore[index]
    page.screenshot(
        path=str(ARTIFACTS / f"comforts-default-preset-{'phone' if phone else 'desktop'}.png")
    )

    # Unmarked, a new chat starts with no system prompt again.
    with page.expect_response(lambda response: "/api/presets/" in response.url):
        page.get_by_label("Start new chats with it").uncheck()
    page.reload()
    ready(page)
    if not page.get_by_label("System prompt").is_visible():
        page.locator("#settings > summary").click()
    expect(page.get_by_label("System prompt")).to_have_value("")
    expect(page.get_by_label("Start new chats with it")).to_be_disabled()


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_a_new_chat_offers_example_prompts(
    browser: Browser, web_server: str, owner: Any, default_model: Any, phone: bool
) -> None:
    conversation = answered(owner, "Loops", "Show me a loop in Python.", CODE_ANSWER)
    page = logged_in(context_for(browser, phone=phone, dark=phone), web_server)
    examples = page.get_by_role("list", name="Example prompts").get_by_role("button")
    expect(examples).to_have_count(4)
    for index in range(4):
        expect(examples.nth(index)).to_be_in_viewport()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"]  # type: ignore[index]
    page.screenshot(
        path=str(ARTIFACTS / f"comforts-empty-{'phone-dark' if phone else 'desktop'}.png")
    )
    chosen = examples.nth(2).inner_text()
    examples.nth(2).click()
    box = page.get_by_label("Message", exact=True)
    expect(box).to_have_value(chosen)
    expect(box).to_be_focused()
    # A conversation with messages has no empty state.
    page.goto(f"{web_server}/c/{conversation.pk}/")
    ready(page)
    expect(page.get_by_role("list", name="Example prompts")).to_be_hidden()


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_a_pinned_conversation_heads_the_list_until_unpinned(
    browser: Browser, web_server: str, owner: Any, phone: bool
) -> None:
    from tests.chat.test_browser_sidebar import conversation_with, open_menu, sidebar_titles

    conversation_with(owner, "Oldest", "one", minutes_ago=30)
    conversation_with(owner, "Middle", "two", minutes_ago=20)
    conversation_with(owner, "Newest", "three", minutes_ago=10)
    page = logged_in(context_for(browser, phone=phone), web_server)
    if phone:
        page.get_by_role("button", name="Conversations").click()
    assert sidebar_titles(page) == ["Newest", "Middle", "Oldest"]
    open_menu(page, "Oldest")
    page.get_by_role("button", name="Pin", exact=True).click()
    expect(page.locator("#toasts .toast").last).to_have_text("Pinned “Oldest”.")
    expect(page.locator("#conversation-list li[data-conversation]").first).to_have_attribute(
        "data-pinned", "true"
    )
    assert sidebar_titles(page) == ["Oldest", "Newest", "Middle"]
    page.reload()
    ready(page)
    if phone:
        page.get_by_role("button", name="Conversations").click()
    assert sidebar_titles(page) == ["Oldest", "Newest", "Middle"]
    open_menu(page, "Oldest")
    page.get_by_role("button", name="Unpin", exact=True).click()
    expect(page.locator("#toasts .toast").last).to_have_text("Unpinned “Oldest”.")
    # Back to its place by date.
    expect(page.locator("#conversation-list li[data-conversation] a.title")).to_have_text(
        ["Newest", "Middle", "Oldest"]
    )
    assert page.locator("#conversation-list li[data-pinned]").count() == 0


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_a_conversation_shared_read_only_opens_for_others_until_revoked(
    browser: Browser, web_server: str, owner: Any, outsider: Any, default_model: Any, phone: bool
) -> None:
    answered(owner, "Loops", "Show me a loop in Python.", CODE_ANSWER)
    page = logged_in(context_for(browser, phone=phone), web_server)
    if phone:
        page.get_by_role("button", name="Conversations").click()
    open_menu(page, "Loops")
    page.get_by_role("button", name="Share…").click()
    dialog = page.get_by_role("dialog", name="Share conversation")
    expect(dialog).to_be_visible()
    # Nobody named: refused, with the server's sentence.
    dialog.get_by_label("Only these users").check()
    dialog.get_by_role("button", name="Share", exact=True).click()
    expect(dialog.get_by_role("alert")).to_have_text(
        "Share with everyone logged in, or name someone."
    )
    dialog.get_by_label("Usernames, separated by commas").fill(outsider.username)
    dialog.get_by_role("button", name="Share", exact=True).click()
    link = dialog.locator("#share-url")
    expect(link).to_have_text(re.compile(rf"^{re.escape(web_server)}/s/[\w-]{{20,}}/$"))
    url = link.inner_text()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"]  # type: ignore[index]
    page.screenshot(path=str(ARTIFACTS / f"comforts-share-{'phone' if phone else 'desktop'}.png"))

    reader = context_for(browser, phone=phone).new_page()
    reader.goto(url)
    reader.get_by_label("Username").fill(outsider.username)
    reader.get_by_label("Password").fill(PASSWORD)
    reader.get_by_role("button", name="Log in").click()
    expect(reader.get_by_role("heading", name="Loops", level=1)).to_be_visible()
    expect(reader.locator(".message.user")).to_have_text("Show me a loop in Python.")
    answer = reader.locator(".message.assistant")
    expect(answer.locator("strong")).to_have_text("loop")  # rendered markdown
    expect(answer.locator(".hljs-keyword").first).to_be_visible()
    expect(reader.get_by_label("Message")).to_have_count(0)  # read-only: no message box
    assert reader.evaluate("document.documentElement.scrollWidth") <= reader.viewport_size["width"]  # type: ignore[index]

    dialog.get_by_role("button", name="Revoke link").click()
    expect(dialog.locator("#share-link")).to_be_hidden()
    response = reader.goto(url)
    assert response is not None and response.status == 404
