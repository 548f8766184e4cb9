"""Login throttling in a real browser (chromium through Playwright, daphne): five wrong passwords
lock the login with a sentence, the admin clears the lock in Django's admin, and the user then
logs in to a working chat page."""

from __future__ import annotations

from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser, Page, expect

from tests.chat import test_browser
from tests.chat.test_browser_accounts import log_in_as
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

page = test_browser.page  # the browser fixture, as the other browser tests have it


def test_a_locked_login_says_so_until_the_admin_clears_it(
    page: Page, web_server: str, owner: Any, default_model: Any
) -> None:
    # The admin logs in first, in a browser of their own: the lock below also holds this
    # address (every test browser is 127.0.0.1), but not a session already open.
    get_user_model().objects.create_superuser("root", password=PASSWORD)
    browser: Browser = page.context.browser  # type: ignore[assignment]
    admin = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    log_in_as(admin, web_server, "root")
    expect(admin.get_by_label("Message")).to_be_visible()

    for _ in range(4):
        log_in_as(page, web_server, "alice", "not the password")
        expect(page.get_by_role("alert")).to_contain_text("didn't match")
    log_in_as(page, web_server, "alice", "not the password")
    expect(page.get_by_role("alert")).to_contain_text("logging in is locked for 15 minutes")
    # Now even the right password is refused, with the same sentence.
    log_in_as(page, web_server, "alice")
    expect(page.get_by_role("alert")).to_contain_text("ask an admin to unlock it")
    expect(page.get_by_label("Message")).not_to_be_attached()

    # The admin finds the lock among the access attempts and deletes it.
    admin.goto(f"{web_server}/admin/axes/accessattempt/")
    row = admin.locator("#result_list tbody tr", has_text="alice")
    expect(row).to_contain_text("Locked Out")
    row.get_by_role("checkbox").check()
    admin.get_by_label("Action:").select_option(label="Delete selected access attempts")
    admin.get_by_role("button", name="Go").click()
    admin.get_by_role("button", name="Yes, I\u2019m sure").click()
    expect(admin.locator(".messagelist")).to_contain_text("Successfully deleted 1")
    assert not AccessAttempt.objects.exists()

    # Alice logs in to a chat page whose socket is connected.
    log_in_as(page, web_server, "alice")
    expect(page.get_by_label("Message")).to_be_visible()
    expect(page.locator("body[data-connected=true]")).to_be_attached()
    admin.context.close()
