"""Debian's chromium for the browser tests, through Playwright's sync API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connections
from playwright.sync_api import Browser, Page, expect, sync_playwright

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless chromium for one test.

    Playwright's sync API runs an event loop in this thread, so Django would refuse the test's
    own queries as async-unsafe: they are allowed meanwhile. They run on connections of their
    own, which are closed here; one left open keeps PostgreSQL from dropping the test database."""
    ARTIFACTS.mkdir(exist_ok=True)
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                yield browser
            finally:
                connections.close_all()
                browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def admin_log_in(page: Page, base_url: str) -> None:
    """Log in as the `staff` fixture's user and land on the model-admin page, its socket open."""
    from tests.conftest import PASSWORD

    page.goto(f"{base_url}/accounts/login/?next=/models/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("body[data-connected=true]")).to_be_attached()
