"""The collections page (/collections/) in a real browser (chromium through Playwright) against
daphne, with the real documents worker reading the files: create a collection, drop files on
it and watch them read page by page, rename it, remove a file, delete it; a staff member
shares one with a group, whose member reads it without a control to change it; an outsider
gets 404 from every call the page makes."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from documents.models import Collection, Document
from tests.browser import ARTIFACTS
from tests.conftest import PASSWORD
from tests.documents.conftest import PLANTED_FACT, fact_pdf, index_here, pdf_bytes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
# A file name is a stranger's text: shown as the text it is, never as markup. (No "/": the
# server keeps only what follows the last one, as a path's last part.)
HOSTILE_NAME = "protocols <img src=x onerror=alert(1)> <b>v2<b>.pdf"


def logged_in(browser: Browser, web_server: str, username: str) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{web_server}/accounts/login/?next=/collections/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("body[data-ready=true]")).to_be_attached()
    expect(page.locator("body[data-documents-socket=open]")).to_be_attached()
    return page


def drop_files(page: Page, selector: str, files: list[tuple[str, bytes]]) -> None:
    """Drag files from the desktop and drop them on an element, as a person does: the page
    sees dragenter, dragover and drop with a DataTransfer holding real File objects."""
    payload = [{"name": name, "b64": base64.b64encode(content).decode()} for name, content in files]
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], f.name));
            }
            return transfer;
        }""",
        payload,
    )
    target = page.locator(selector)
    for kind in ("dragenter", "dragover", "drop"):
        target.dispatch_event(kind, {"dataTransfer": transfer})


def record_texts(page: Page, selector: str) -> None:
    """Keep every text the element shows from now on (window.__texts), so a state shown for a
    moment (a page count while the worker reads) can be checked after it has passed."""
    page.evaluate(
        """(selector) => {
            window.__texts = [];
            const target = document.querySelector(selector);
            const keep = () => window.__texts.push(target.innerText);
            const all = {subtree: true, childList: true, characterData: true};
            new MutationObserver(keep).observe(target, all);
        }""",
        selector,
    )


def test_it_creates_fills_renames_empties_and_deletes_a_collection(
    browser: Browser, web_server: str, owner: Any, outsider: Any, document_worker: Any
) -> None:
    page = logged_in(browser, web_server, "alice")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    expect(page.locator("#mine")).to_have_text("None yet.")
    expect(page.locator("#nothing-chosen")).to_be_visible()

    page.get_by_label("New collection").fill("Lab protocols")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#collection-name")).to_have_text("Lab protocols")
    expect(page.locator("#mine a[aria-current=page]")).to_have_text("Lab protocols")
    collection = Collection.objects.get(owner=owner)
    expect(page).to_have_url(re.compile(rf"#collection-{collection.pk}$"))

    record_texts(page, "#documents")
    drop_files(
        page,
        "#drop-zone",
        [
            (HOSTILE_NAME, fact_pdf(total=150, fact_page=37, fact=PLANTED_FACT)),
            ("locked.pdf", pdf_bytes(["A secret page."], password="hunter2")),
            ("holiday.pdf", PNG),
        ],
    )
    rows = page.locator("#documents tr")
    expect(rows).to_have_count(3)
    fact = page.locator("#documents tr", has_text="protocols")
    expect(fact).to_have_attribute("data-state", "ready", timeout=60_000)
    expect(fact.locator(".pages")).to_have_text("150")
    document = Document.objects.get(name=HOSTILE_NAME)
    expect(fact.locator(".tokens")).to_have_text(f"{document.tokens:,}")
    expect(fact.locator(".progress-text")).to_have_text("Ready")
    # The worker's progress reached the page as it read (at least its last count, always sent).
    shown = page.evaluate("window.__texts")
    assert any(re.search(r"Reading… page \d+ of 150", text) for text in shown), shown[-5:]
    assert any("Waiting to be read" in t for t in shown)

    # Its name is the text it is: a link to download it, with no element made of it.
    link = fact.locator(".file-name a")
    expect(link).to_have_text(HOSTILE_NAME)
    expect(link).to_have_attribute("href", f"/api/documents/{document.pk}/file")
    expect(page.locator("#documents img, #documents b")).to_have_count(0)

    locked = page.locator("#documents tr", has_text="locked.pdf")
    expect(locked).to_have_attribute("data-state", "failed", timeout=60_000)
    expect(locked.locator(".progress-text")).to_have_text(
        "This PDF is encrypted; remove the password and upload it again."
    )
    # Refused at upload, by its content: a PNG whatever its name; nothing was kept.
    refused = page.locator("#documents tr", has_text="holiday.pdf")
    expect(refused).to_have_attribute("data-state", "failed")
    expect(refused.locator(".progress-text")).to_contain_text("Portable Network Graphics")
    assert not Document.objects.filter(name="holiday.pdf").exists()
    page.screenshot(path=str(ARTIFACTS / "collections.png"), full_page=True)

    # An outsider: every call the page makes for this collection is a 404.
    intruder = logged_in(browser, web_server, "mallory")
    expect(intruder.locator("#mine")).to_have_text("None yet.")
    expect(intruder.locator("#shared")).to_have_text("Nothing is shared with you.")
    intruder.goto(f"{web_server}/collections/#collection-{collection.pk}")
    expect(intruder.locator("body[data-ready=true]")).to_be_attached()
    expect(intruder.locator("#detail")).to_be_hidden()
    token = next(c["value"] for c in intruder.context.cookies() if c["name"] == "csrftoken")
    headers = {"X-CSRFToken": token}
    api = intruder.request
    calls = [
        api.get(f"{web_server}/api/collections/{collection.pk}/"),
        api.patch(
            f"{web_server}/api/collections/{collection.pk}/", data={"name": "Mine"}, headers=headers
        ),
        api.delete(f"{web_server}/api/collections/{collection.pk}/", headers=headers),
        api.post(
            f"{web_server}/api/collections/{collection.pk}/documents/",
            multipart={"file": {"name": "x.txt", "mimeType": "text/plain", "buffer": b"hello"}},
            headers=headers,
        ),
        api.get(f"{web_server}/api/documents/{document.pk}/"),
        api.get(f"{web_server}/api/documents/{document.pk}/file"),
        api.delete(f"{web_server}/api/documents/{document.pk}/", headers=headers),
    ]
    assert [r.status for r in calls] == [404] * len(calls)
    assert {r.json()["error"]["code"] for r in calls} == {"not_found"}
    intruder.context.close()

    # Rename: Escape leaves it as it was; Enter saves, and a reload shows the new name.
    page.get_by_role("button", name="Rename").click()
    page.get_by_label("Collection name").fill("Nothing")
    page.get_by_label("Collection name").press("Escape")
    expect(page.locator("#collection-name")).to_have_text("Lab protocols")
    page.get_by_role("button", name="Rename").click()
    page.get_by_label("Collection name").fill("Bench protocols")
    page.get_by_label("Collection name").press("Enter")
    expect(page.locator("#collection-name")).to_have_text("Bench protocols")
    expect(page.locator("#mine a[aria-current=page]")).to_have_text("Bench protocols")
    page.reload()
    expect(page.locator("#collection-name")).to_have_text("Bench protocols")
    expect(page.locator("#documents tr")).to_have_count(2)  # the refused one was never kept

    page.get_by_role("button", name="Remove locked.pdf").click()
    expect(page.locator("#documents tr")).to_have_count(1)
    assert not Document.objects.filter(name="locked.pdf").exists()

    # Delete: Cancel keeps it; Delete takes it with its files.
    page.get_by_role("button", name="Delete").click()
    expect(page.locator("#delete-question")).to_contain_text("Delete “Bench protocols”? Its file")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#collection-name")).to_have_text("Bench protocols")
    page.get_by_role("button", name="Delete").click()
    page.locator("#delete-dialog").get_by_role("button", name="Delete").click()
    expect(page.locator("#mine")).to_have_text("None yet.")
    expect(page.locator("#detail")).to_be_hidden()
    assert not Collection.objects.exists() and not Document.objects.exists()
    assert dialogs == []


def test_staff_share_a_collection_that_a_group_member_only_reads(
    browser: Browser, web_server: str, staff: Any, member: Any, tmp_path: Any
) -> None:
    page = logged_in(browser, web_server, "admin")
    page.get_by_label("New collection").fill("Lab protocols")
    page.get_by_label("New collection").press("Enter")
    expect(page.locator("#collection-name")).to_have_text("Lab protocols")
    expect(page.locator("#collection-owner")).to_have_text("Yours; nobody else sees it.")
    # The file picker, this time.
    notes = tmp_path / "centrifuge.md"
    notes.write_text("# Centrifuge\n\nNever open the lid while the rotor spins.\n")
    page.locator("#file-input").set_input_files(str(notes))
    row = page.locator("#documents tr", has_text="centrifuge.md")
    expect(row).to_have_attribute("data-state", "queued")
    # Read here rather than by a worker: its frames reach the page through the channel layer.
    index_here(Document.objects.get(name="centrifuge.md"))
    expect(row).to_have_attribute("data-state", "ready")

    share = page.locator("#share-form")
    share.get_by_label("lab").check()
    share.get_by_role("button", name="Save sharing").click()
    expect(page.locator("#share-status")).to_have_text("Saved.")
    expect(page.locator("#collection-owner")).to_have_text(
        "Yours; shared read-only with the group lab."
    )
    collection = Collection.objects.get()
    assert [g.name for g in collection.shared_groups.all()] == ["lab"]
    assert not collection.shared_with_everyone

    reader = logged_in(browser, web_server, "bob")
    expect(reader.locator("#mine")).to_have_text("None yet.")
    expect(reader.locator("#detail")).to_be_visible()  # the only collection there is
    expect(reader.locator("#shared a")).to_have_text("Lab protocols · admin")
    expect(reader.locator("#collection-owner")).to_contain_text("Shared with you by admin")
    for control in ("#drop-zone", "#rename", "#delete", "#share-form", "#documents .remove"):
        expect(reader.locator(control)).to_be_hidden()
    shared_row = reader.locator("#documents tr", has_text="centrifuge.md")
    expect(shared_row).to_have_attribute("data-state", "ready")
    expect(shared_row.locator("button")).to_have_count(0)
    with reader.expect_download() as download:
        shared_row.get_by_role("link", name="centrifuge.md").click()
    assert download.value.suggested_filename == "centrifuge.md"
    token = next(c["value"] for c in reader.context.cookies() if c["name"] == "csrftoken")
    refused = reader.request.patch(
        f"{web_server}/api/collections/{collection.pk}/",
        data={"name": "Mine now"},
        headers={"X-CSRFToken": token},
    )
    assert refused.status == 403 and refused.json()["error"]["code"] == "not_owner"

    # On a phone the list goes above the files, and the page never scrolls sideways.
    reader.set_viewport_size({"width": 390, "height": 844})
    expect(reader.locator("#collection-name")).to_be_visible()
    assert reader.evaluate("document.documentElement.scrollWidth") <= 390
    reader.screenshot(path=str(ARTIFACTS / "collections-phone.png"), full_page=True)
