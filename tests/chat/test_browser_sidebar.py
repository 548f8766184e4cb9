"""The chat page's sidebar in a real browser (chromium through Playwright, daphne): rename,
delete, search, export and import, and the list loaded in pages as it is scrolled."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from chat.models import Conversation, Message
from chat.selectors import SIDEBAR_PAGE
from tests.browser import ARTIFACTS
from tests.chat import test_browser
from tests.chat.test_browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

page = test_browser.page  # the browser fixture, as the other browser tests have it


def ready(page: Page) -> None:
    """Wait for the page's modules: chat.js connects only after sidebar.js and settings.js ran,
    and a control used before them would miss its listener."""
    expect(page.locator("body[data-connected=true]")).to_be_attached()


def conversation_with(owner: Any, title: str, *texts: str, minutes_ago: int = 0) -> Conversation:
    """A conversation whose messages alternate user, assistant, starting with the user."""
    conversation = Conversation.objects.create(
        owner=owner, title=title, updated_at=timezone.now() - timedelta(minutes=minutes_ago)
    )
    parent = None
    for index, text in enumerate(texts):
        parent = Message.objects.create(
            conversation=conversation,
            parent=parent,
            role="user" if index % 2 == 0 else "assistant",
            content=text,
            model_name="" if index % 2 == 0 else "SmolLM2",
        )
    return conversation


def entry(page: Page, title: str) -> Any:
    return page.locator("#conversation-list li[data-conversation]").filter(
        has=page.get_by_role("link", name=title, exact=True)
    )


def open_menu(page: Page, title: str) -> None:
    page.get_by_role("button", name=f"Actions for {title}", exact=True).click()


def sidebar_titles(page: Page, list_id: str = "conversation-list") -> list[str]:
    return page.locator(f"#{list_id} li[data-conversation] a.title").all_inner_texts()


def test_it_renames_a_conversation_and_the_title_survives_a_reload(
    page: Page, web_server: str, owner: Any
) -> None:
    conversation = conversation_with(owner, "Old title", "Hello", "Hi there")
    log_in(page, web_server)
    ready(page)

    open_menu(page, "Old title")
    page.get_by_role("button", name="Rename").click()
    box = page.get_by_label("New title for Old title")
    expect(box).to_be_focused()
    box.fill("Escaped title")
    box.press("Escape")
    expect(entry(page, "Old title")).to_be_visible()
    conversation.refresh_from_db()
    assert conversation.title == "Old title"

    open_menu(page, "Old title")
    page.get_by_role("button", name="Rename").click()
    box = page.get_by_label("New title for Old title")
    box.fill("Plans for the garden")
    box.press("Enter")
    expect(entry(page, "Plans for the garden")).to_be_visible()
    expect(page.get_by_role("button", name="Actions for Plans for the garden")).to_be_focused()

    def renamed() -> bool:
        conversation.refresh_from_db()
        return conversation.title == "Plans for the garden"

    wait_until(renamed)
    page.reload()
    ready(page)
    assert sidebar_titles(page) == ["Plans for the garden"]

    # Another page open on the same account hears of a rename through its socket.
    other = page.context.new_page()
    other.goto(f"{web_server}/c/{conversation.pk}/")
    expect(other.locator("body[data-connected=true]")).to_be_attached()
    open_menu(page, "Plans for the garden")
    page.get_by_role("button", name="Rename").click()
    page.get_by_label("New title for Plans for the garden").fill("Balcony garden")
    page.keyboard.press("Enter")
    expect(other.locator("#conversation-list li.current a.title")).to_have_text("Balcony garden")
    expect(other).to_have_title("Balcony garden · Wiz Web")


def test_it_deletes_a_conversation_only_after_confirming(
    page: Page, web_server: str, owner: Any
) -> None:
    keep = conversation_with(owner, "Keep me", "one", minutes_ago=5)
    doomed = conversation_with(owner, "Delete me", "two", minutes_ago=1)
    log_in(page, web_server)
    ready(page)
    dialog = page.get_by_role("dialog")

    open_menu(page, "Delete me")
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Delete “Delete me”?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    page.reload()
    ready(page)
    assert sidebar_titles(page) == ["Delete me", "Keep me"]
    assert Conversation.objects.filter(pk=doomed.pk).exists()

    open_menu(page, "Delete me")
    page.get_by_role("button", name="Delete", exact=True).click()
    dialog.get_by_role("button", name="Delete").click()
    expect(entry(page, "Delete me")).to_have_count(0)
    wait_until(lambda: not Conversation.objects.filter(pk=doomed.pk).exists())
    assert Message.objects.filter(conversation_id=doomed.pk).count() == 0
    page.reload()
    ready(page)
    assert sidebar_titles(page) == ["Keep me"]

    # Deleting the conversation that is open leaves it for a new chat.
    page.goto(f"{web_server}/c/{keep.pk}/")
    ready(page)
    open_menu(page, "Keep me")
    page.get_by_role("button", name="Delete", exact=True).click()
    dialog.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(f"{web_server}/")
    expect(page.locator("#conversation-list")).to_contain_text("No conversations yet.")


def test_it_searches_message_text_as_well_as_titles(
    page: Page, web_server: str, owner: Any, outsider: Any
) -> None:
    conversation_with(owner, "Gardening", "How do I grow tomatoes on a balcony?", "In pots.")
    conversation_with(owner, "Soup", "A recipe for leek soup", "Leeks, potatoes, stock.")
    conversation_with(owner, "Tomato sauce", "Quick sauce?", "Simmer them.")
    conversation_with(outsider, "Mallory's tomatoes", "tomato secrets")
    log_in(page, web_server)
    ready(page)
    search = page.get_by_label("Search conversations")

    search.fill("tomato")
    expect(page.locator("#search-status")).to_have_text("2 conversations match “tomato”.")
    assert sorted(sidebar_titles(page, "search-results")) == ["Gardening", "Tomato sauce"]
    expect(page.locator("#conversation-list")).to_be_hidden()

    search.fill("potatoes")  # only in an answer's text
    expect(page.locator("#search-status")).to_have_text("1 conversation matches “potatoes”.")
    assert sidebar_titles(page, "search-results") == ["Soup"]

    search.fill("zebra")
    expect(page.locator("#search-status")).to_have_text("No conversation matches “zebra”.")
    expect(page.locator("#search-results li")).to_have_count(0)

    search.fill("")
    expect(page.locator("#conversation-list")).to_be_visible()
    expect(page.locator("#search-status")).to_have_text("")
    assert sidebar_titles(page) == ["Tomato sauce", "Soup", "Gardening"]


def wait_until(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        time.sleep(0.05)


def test_it_exports_a_conversation_as_markdown_and_as_json(
    page: Page, web_server: str, owner: Any, tmp_path: Path
) -> None:
    conversation = conversation_with(
        owner, "Moon facts", "How far away is the moon?", "About **384,400 km**."
    )
    log_in(page, web_server)
    ready(page)

    open_menu(page, "Moon facts")
    with page.expect_download() as markdown_download:
        page.get_by_role("link", name="Export Markdown").click()
    download = markdown_download.value
    assert download.suggested_filename == f"conversation-{conversation.pk}.md"
    markdown = Path(download.path()).read_text()
    assert markdown.startswith("# Moon facts\n")
    assert "**You:**\n\nHow far away is the moon?" in markdown
    assert "**Assistant (SmolLM2):**\n\nAbout **384,400 km**." in markdown

    open_menu(page, "Moon facts")
    with page.expect_download() as json_download:
        page.get_by_role("link", name="Export JSON").click()
    download = json_download.value
    assert download.suggested_filename == f"conversation-{conversation.pk}.json"
    exported = json.loads(Path(download.path()).read_text())
    assert exported["id"] == str(conversation.pk)
    assert exported["title"] == "Moon facts"
    assert [(m["role"], m["content"]) for m in exported["messages"]] == [
        ("user", "How far away is the moon?"),
        ("assistant", "About **384,400 km**."),
    ]
    assert exported["messages"][1]["parent"] == exported["messages"][0]["id"]


def test_it_imports_a_json_export_and_opens_it(
    page: Page, web_server: str, owner: Any, tmp_path: Path
) -> None:
    export = {
        "title": "Imported moon talk",
        "messages": [
            {"id": "a", "role": "user", "content": "What is the moon made of?", "parent": None},
            {"id": "b", "role": "assistant", "content": "Rock and dust.", "parent": "a"},
        ],
    }
    good = tmp_path / "moon.json"
    good.write_text(json.dumps(export))
    bad = tmp_path / "notes.json"
    bad.write_text(json.dumps({"title": "no messages here"}))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    log_in(page, web_server)
    ready(page)
    error = page.locator("#sidebar-error")

    for path, message in (
        (broken, "broken.json is not JSON; choose a file made by “Export JSON”."),
        (bad, "An export has a 'messages' list of 1 to 5000 messages."),
    ):
        with page.expect_file_chooser() as chooser:
            page.get_by_role("button", name="Import…").click()
        chooser.value.set_files(path)
        expect(error).to_have_text(message)
    assert not Conversation.objects.filter(owner=owner).exists()

    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Import…").click()
    chooser.value.set_files(good)
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    imported = Conversation.objects.get(owner=owner)
    assert page.url.endswith(f"/c/{imported.pk}/")
    expect(page.locator("li.message.user .content")).to_have_text("What is the moon made of?")
    expect(page.locator("li.message.assistant .content")).to_have_text("Rock and dust.")
    expect(page.locator("#conversation-list li.current a.title")).to_have_text("Imported moon talk")


MANY = 5000


def test_it_loads_a_long_history_in_pages_as_the_list_is_scrolled(
    page: Page, web_server: str, owner: Any, outsider: Any
) -> None:
    now = timezone.now()
    Conversation.objects.bulk_create(
        Conversation(owner=owner, title=f"Conversation {i}", updated_at=now - timedelta(seconds=i))
        for i in range(MANY)
    )
    Conversation.objects.bulk_create(
        Conversation(owner=outsider, title=f"Other {i}", updated_at=now) for i in range(MANY)
    )
    log_in(page, web_server)
    ready(page)
    entries = page.locator("#conversation-list li[data-conversation]")

    started = time.perf_counter()
    page.goto(f"{web_server}/")
    ready(page)
    loaded_in = time.perf_counter() - started
    navigation = page.evaluate(
        """() => {
          const n = performance.getEntriesByType("navigation")[0];
          return {ttfb: n.responseStart - n.requestStart, dcl: n.domContentLoadedEventEnd,
                  load: n.loadEventEnd, bytes: n.transferSize};
        }"""
    )
    expect(entries).to_have_count(SIDEBAR_PAGE)
    assert sidebar_titles(page)[:3] == ["Conversation 0", "Conversation 1", "Conversation 2"]

    # Scrolling to the end of the list loads the next page, and the one after that.
    page.locator("#sidebar-scroll").evaluate("list => list.scrollTo(0, list.scrollHeight)")
    expect(entries).to_have_count(2 * SIDEBAR_PAGE)
    page.locator("#sidebar-scroll").evaluate("list => list.scrollTo(0, list.scrollHeight)")
    expect(entries).to_have_count(3 * SIDEBAR_PAGE)
    # "Load more" does the same from the keyboard. (Focusing it scrolls the end of the list
    # into view, which may load a page by itself as well.)
    load_more = page.get_by_role("button", name="Load more")
    load_more.focus()
    load_more.press("Enter")
    page.wait_for_function(
        "n => document.querySelectorAll('#conversation-list li[data-conversation]').length >= n",
        arg=4 * SIDEBAR_PAGE,
    )
    titles = sidebar_titles(page)
    assert titles == [f"Conversation {i}" for i in range(len(titles))]  # in order, none twice

    # A deep page straight from the API, as the sidebar asks for it.
    started = time.perf_counter()
    last_page = page.evaluate(
        """async (n) => (await fetch(`/api/conversations/?page=${n}`)).json()""",
        MANY // SIDEBAR_PAGE,
    )
    deep_page_in = time.perf_counter() - started
    assert last_page["results"][-1]["title"] == f"Conversation {MANY - 1}"
    assert last_page["next"] is None

    # A search is paged the same way: "Conversation 1" is in 1,111 titles.
    page.get_by_label("Search conversations").fill("Conversation 1")
    found = page.locator("#search-results li[data-conversation]")
    expect(page.locator("#search-status")).to_have_text(
        "1111 conversations match “Conversation 1”."
    )
    expect(found).to_have_count(SIDEBAR_PAGE)
    page.locator("#sidebar-scroll").evaluate("list => list.scrollTo(0, list.scrollHeight)")
    expect(found).to_have_count(2 * SIDEBAR_PAGE)
    assert all(t.startswith("Conversation 1") for t in sidebar_titles(page, "search-results"))
    page.get_by_label("Search conversations").fill("")
    expect(entries.first).to_be_visible()
    assert len(sidebar_titles(page)) >= 4 * SIDEBAR_PAGE  # the loaded history is kept

    print(
        f"\nsidebar with {MANY} conversations: page load {loaded_in * 1000:.0f} ms in chromium "
        f"(server's first byte {navigation['ttfb']:.0f} ms, DOMContentLoaded "
        f"{navigation['dcl']:.0f} ms, load {navigation['load']:.0f} ms, "
        f"{navigation['bytes'] / 1024:.0f} KiB); last API page {deep_page_in * 1000:.0f} ms"
    )
    page.screenshot(path=str(ARTIFACTS / "sidebar-desktop.png"))


def test_on_a_phone_the_list_folds_behind_a_conversations_button(
    page: Page, web_server: str, owner: Any
) -> None:
    for i in range(8):
        conversation_with(owner, f"Chat number {i}", "hello", minutes_ago=i)
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, web_server)
    ready(page)
    toggle = page.get_by_role("button", name="Conversations")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(page.get_by_role("link", name="Chat number 0")).to_be_hidden()
    expect(page.get_by_label("Message")).to_be_in_viewport()
    page.screenshot(path=str(ARTIFACTS / "sidebar-phone-closed.png"))

    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(page.get_by_role("link", name="Chat number 0")).to_be_visible()
    expect(page.get_by_label("Search conversations")).to_be_visible()
    open_menu(page, "Chat number 1")
    page.screenshot(path=str(ARTIFACTS / "sidebar-phone-open.png"))
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the page scrolls sideways on a phone"


def test_each_entry_is_worked_from_the_keyboard(page: Page, web_server: str, owner: Any) -> None:
    conversation_with(owner, "Older", "one", minutes_ago=5)
    conversation_with(owner, "Newer", "two", minutes_ago=1)
    log_in(page, web_server)
    ready(page)
    search = page.get_by_label("Search conversations")
    search.focus()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Newer")).to_be_focused()
    page.keyboard.press("Tab")
    menu_button = page.get_by_role("button", name="Actions for Newer")
    expect(menu_button).to_be_focused()
    expect(menu_button).to_have_attribute("aria-expanded", "false")

    page.keyboard.press("Enter")
    expect(menu_button).to_have_attribute("aria-expanded", "true")
    expect(page.get_by_role("button", name="Rename")).to_be_focused()
    page.screenshot(path=str(ARTIFACTS / "sidebar-menu-desktop.png"))
    reached = []
    for _ in range(3):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.textContent"))
    assert reached == ["Delete", "Export Markdown", "Export JSON"]
    page.keyboard.press("Escape")
    expect(menu_button).to_be_focused()
    expect(menu_button).to_have_attribute("aria-expanded", "false")
    expect(page.get_by_role("button", name="Rename")).to_be_hidden()

    # Delete from the keyboard: the dialog takes the focus on Cancel, Escape closes it.
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Delete conversation")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.screenshot(path=str(ARTIFACTS / "sidebar-delete-dialog.png"))
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(menu_button).to_be_focused()
    assert sidebar_titles(page) == ["Newer", "Older"]

    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Older")).to_be_focused()
    search.focus()
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("button", name="Import…")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("link", name="+ New chat")).to_be_focused()
