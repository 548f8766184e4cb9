"""The model-admin page in a real browser: workers appear live from /ws/models/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.chat.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_admin_page_shows_models_and_live_workers(
    staff: Any, default_model: Any, web_server: str, inference_worker: Any
) -> None:
    import os

    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{web_server}/accounts/login/?next=/models/")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#local-models")).to_contain_text(default_model.name)
        row = page.locator('#workers tr[data-worker="test-inference"]')
        expect(row).to_be_visible(timeout=10_000)
        expect(row.locator('[data-field="heartbeat"]')).to_have_text("just now")
        expect(page.locator("body[data-connected=true]")).to_be_attached()
        Path(ARTIFACTS).mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "models-admin.png"), full_page=True)
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
