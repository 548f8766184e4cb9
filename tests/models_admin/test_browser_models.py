"""The model-admin page in a real browser: workers appear live from /ws/models/, and a model is
loaded on a chosen worker, unloaded, refused and deleted from the page as an admin would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from playwright.sync_api import Browser, Page, expect

from models_admin.local_models import localmodel_register
from models_admin.models import LocalModel
from tests.browser import ARTIFACTS, admin_log_in
from tests.conftest import start_worker

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def admin_page(staff: Any, web_server: str, browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    admin_log_in(page, web_server)
    yield page
    context.close()


@pytest.fixture
def page_worker(log_dir: Path) -> Iterator[Any]:
    child = start_worker("page-worker", log_dir)
    yield child
    child.stop()


@pytest.fixture
def vanished_model(default_model: LocalModel) -> LocalModel:
    """A model whose file went away after it was registered (deleted by hand, a disk unplugged)."""
    path = Path(settings.MODELS_DIR) / "vanished.gguf"
    path.write_bytes(default_model.path.read_bytes())
    model = localmodel_register(path=path, name="Vanished model", sha256=default_model.sha256)
    path.unlink()
    return model


def test_the_admin_page_shows_models_and_live_workers(
    default_model: Any, inference_worker: Any, admin_page: Page
) -> None:
    page = admin_page
    expect(page.locator("#local-models")).to_contain_text(default_model.name)
    row = page.locator('#workers tr[data-worker="test-inference"]')
    expect(row).to_be_visible(timeout=10_000)
    expect(row.locator('[data-field="heartbeat"]')).to_have_text("just now")
    page.screenshot(path=str(ARTIFACTS / "models-admin.png"), full_page=True)


def test_a_model_is_loaded_on_a_chosen_worker_and_unloaded_from_the_page(
    second_model: LocalModel, admin_page: Page, page_worker: Any
) -> None:
    # The worker starts after the page was drawn: it appears in the Load form's choices.
    page = admin_page
    worker_row = page.locator('#workers tr[data-worker="page-worker"]')
    expect(worker_row.locator('[data-field="models"]')).to_have_text("—", timeout=10_000)
    rss_before = worker_row.locator('[data-field="rss_bytes"]').inner_text()

    model_row = page.locator(f'#local-models tr[data-model="{second_model.pk}"]')
    load = model_row.locator(".load-form")
    load.get_by_label("Worker").select_option("page-worker")
    load.get_by_label("Context").fill("1024")
    load.get_by_role("button", name="Load").click()
    expect(page.locator("#flashes")).to_contain_text("Loading SmolLM2 second copy on page-worker")
    expect(page.locator("#flashes")).to_contain_text(
        "SmolLM2 second copy is loaded on page-worker with a context of 1024 tokens.",
        timeout=30_000,
    )
    expect(model_row.locator('[data-field="loads"]')).to_have_text("1024")
    # The worker's row and the model's "Held by" follow without a reload.
    expect(worker_row.locator('[data-field="models"]')).to_have_text(second_model.name)
    # Its slots: answers it can write at once with this model (WIZ_PARALLEL), none running.
    expect(worker_row.locator('[data-field="slots"]')).to_have_text("0 / 8 busy")
    expect(worker_row.locator('[data-field="tokens_per_s"]')).to_have_text("0.0")
    holders = model_row.locator('[data-field="holders"]')
    expect(holders).to_contain_text("page-worker")
    expect(worker_row.locator('[data-field="rss_bytes"]')).not_to_have_text(rss_before)
    page.screenshot(path=str(ARTIFACTS / "models-loaded.png"), full_page=True)

    # Deleting a loaded model is refused with what to do.
    page.once("dialog", lambda dialog: dialog.accept())
    model_row.get_by_role("button", name="Delete").click()
    expect(page.locator(".flash.error")).to_contain_text(
        "is loaded on page-worker; unload it there first"
    )
    expect(page.locator("body[data-connected=true]")).to_be_attached()

    model_row = page.locator(f'#local-models tr[data-model="{second_model.pk}"]')
    model_row.get_by_role("button", name="Unload from page-worker").click()
    expect(page.locator("#flashes")).to_contain_text(
        "SmolLM2 second copy is unloaded from page-worker.", timeout=30_000
    )
    expect(worker_row.locator('[data-field="models"]')).to_have_text("—")
    expect(model_row.locator('[data-field="holders"]')).to_have_text("—")
    # The options were saved on the model: every later load (and the form) uses them.
    page.reload()
    expect(model_row.locator(".load-form").get_by_label("Context")).to_have_value("1024")


def test_a_load_that_fails_on_the_worker_is_told_and_a_delete_asks_first(
    vanished_model: LocalModel, page_worker: Any, admin_page: Page
) -> None:
    page = admin_page
    model_row = page.locator(f'#local-models tr[data-model="{vanished_model.pk}"]')
    load = model_row.locator(".load-form")
    load.get_by_label("Worker").select_option("page-worker")
    load.get_by_role("button", name="Load").click()
    expect(page.locator(".flash.error")).to_contain_text(
        "page-worker could not load Vanished model: The file of model Vanished model is missing",
        timeout=30_000,
    )

    # Dismissing the confirmation keeps the model; accepting deletes it.
    page.once("dialog", lambda dialog: dialog.dismiss())
    model_row.get_by_role("button", name="Delete").click()
    page.reload()
    expect(model_row).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    model_row.get_by_role("button", name="Delete").click()
    expect(page.locator(".flash").first).to_contain_text("Deleted Vanished model.")
    expect(page.locator(f'#local-models tr[data-model="{vanished_model.pk}"]')).to_have_count(0)


@pytest.mark.parametrize("path", ["/", "/models/", "/usage/"])
def test_a_staff_members_pages_fit_a_phone(
    path: str, default_model: Any, web_server: str, admin_page: Page
) -> None:
    page = admin_page
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{web_server}{path}")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"{path} is {width} px wide on a 390 px screen"
    # Staff have the most links in the top bar: every one stays on the screen.
    for link in page.locator(".topbar a, .topbar button").all():
        box = link.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, link
    name = {"/models/": "models-phone.png", "/usage/": "usage-phone.png"}.get(
        path, "chat-phone-staff.png"
    )
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_messages_stay_few_and_do_not_push_the_page_down(
    default_model: LocalModel, admin_page: Page
) -> None:
    page = admin_page
    heading = page.get_by_role("heading", name="On disk")
    before = heading.bounding_box()
    load = page.locator(f'#local-models tr[data-model="{default_model.pk}"] .load-form')
    # A worker that is not there: each Load is refused with a sentence.
    page.evaluate(
        """(select) => select.add(new Option("gone-worker", "gone-worker", true, true))""",
        load.get_by_label("Worker").element_handle(),
    )
    flashes = page.locator("#flashes .flash")
    for count in range(1, 6):
        load.get_by_role("button", name="Load").click()
        expect(flashes).to_have_count(min(count, 3))
        expect(load.get_by_role("button", name="Load")).to_be_enabled()
    expect(flashes.first).to_contain_text("gone-worker")
    assert heading.bounding_box() == before
    box = page.locator("#flashes").bounding_box()
    viewport = page.viewport_size
    assert box is not None and viewport is not None
    assert box["y"] + box["height"] <= viewport["height"]
    flashes.first.get_by_role("button", name="Dismiss").click()
    expect(flashes).to_have_count(2)
