"""The model-admin page in a real browser: find a model on the (stand-in) Hub, download it with a
progress bar that moves live from /ws/models/, cancel it, resume it, and see it ready."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser import ARTIFACTS, admin_log_in, chromium
from tests.conftest import daphne_start
from tests.hub_server import FakeHub
from tests.models_admin.conftest import SMOL_FILE, SMOL_REPO

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("clean_downloads"),
]

MB = 1 << 20


@pytest.fixture
def hub_web_server(hub: FakeHub, log_dir: Path) -> Iterator[str]:
    """daphne started after HF_ENDPOINT points at the stand-in Hub (the session's own server
    may have started before it existed)."""
    child, url = daphne_start("daphne-hub", log_dir)
    yield url
    child.stop()


def bar_value(page: Any, download: str) -> float:
    return float(page.eval_on_selector(f'tr[data-download="{download}"] progress', "p => p.value"))


def test_a_download_from_the_page_shows_a_moving_bar_cancels_and_resumes(
    staff: Any, default_model: Any, hub: FakeHub, download_worker: Any, hub_web_server: str
) -> None:
    hub.throttle_bytes_per_s = 6 * MB
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        admin_log_in(page, hub_web_server)

        page.get_by_label("Search GGUF repos").fill("wiz-test")
        page.get_by_role("button", name="Search").click()
        page.get_by_role("link", name=SMOL_REPO).click()
        file_row = page.locator(f'#hub-files tr[data-file="{SMOL_FILE}"]')
        expect(file_row).to_contain_text("Q4_1")
        expect(file_row).to_contain_text("at 8192 tokens")
        file_row.get_by_role("button", name="Download").click()

        expect(page.locator(".flash")).to_contain_text(f"Downloading {SMOL_FILE}")
        row = page.locator(
            '#downloads-table tr[data-state="queued"], #downloads-table tr[data-state="running"]'
        ).first
        download = row.get_attribute("data-download")
        assert download
        row = page.locator(f'#downloads-table tr[data-download="{download}"]')
        expect(page.locator("body[data-connected=true]")).to_be_attached()
        expect(row).to_have_attribute("data-state", "running", timeout=15_000)
        page.wait_for_function(
            f"""() => document.querySelector('tr[data-download="{download}"] progress')
                .value > {3 * MB}""",
            timeout=15_000,
        )
        first = bar_value(page, download)
        page.wait_for_function(
            f"""() => document.querySelector('tr[data-download="{download}"] progress')
                .value > {first + 3 * MB}""",
            timeout=15_000,
        )
        assert bar_value(page, download) > first  # it moves, live
        progress = row.locator('[data-field="progress"]')
        expect(progress).to_contain_text("MB/s")
        expect(progress).to_contain_text("left")
        page.screenshot(path=str(ARTIFACTS / "models-download.png"), full_page=True)

        row.get_by_role("button", name="Cancel").click()
        expect(row).to_have_attribute("data-state", "cancelled", timeout=5_000)
        expect(row.locator('[data-field="note"]')).to_contain_text("kept on disk for a resume")
        kept = bar_value(page, download)
        assert 0 < kept < hub.repos[SMOL_REPO].files[SMOL_FILE].size

        hub.throttle_bytes_per_s = 0
        row.get_by_role("button", name="Resume").click()
        expect(page.locator(".flash").first).to_contain_text(f"Resuming {SMOL_FILE} from")
        resumed = page.locator("#downloads-table tbody tr").first
        expect(resumed.locator('[data-field="note"]')).to_contain_text(
            "Ready as the model SmolLM2-135M-Instruct-Q4_1", timeout=60_000
        )
        expect(resumed).to_have_attribute("data-state", "done")
        page.screenshot(path=str(ARTIFACTS / "models-download-done.png"), full_page=True)
        page.reload()
        expect(page.locator("#local-models")).to_contain_text("SmolLM2-135M-Instruct-Q4_1")
        # The cancelled attempt was finished by the resume: it offers no Resume any more.
        expect(page.locator(f'tr[data-download="{download}"] .resume-form')).to_have_count(0)
