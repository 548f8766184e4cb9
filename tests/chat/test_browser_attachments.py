"""Documents on the chat page in a real browser (chromium through Playwright) against daphne:
a file dropped on the page is uploaded and read by the real documents worker, shown as a chip
with its pages and tokens while Send waits for it, counted by the context meter and sent with
the prompt, whose real answer's source opens the file it was given; a file pasted into the
message box and one that cannot be read; a collection from the picker. An answer's sources
(saved in the database, as the other browser tests save finished answers) open their passage
in a panel, from a chip or from [n] in the text, and a deleted file's source says so."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, WebSocket, expect

from chat.models import Message
from documents.models import Document
from documents.services import collection_create, document_delete, document_upload
from tests.browser import ARTIFACTS
from tests.chat import test_browser
from tests.chat.test_browser import log_in
from tests.chat.test_browser_daily_use import answered
from tests.chat.test_browser_sidebar import ready, wait_until
from tests.documents.conftest import PLANTED_FACT, fact_pdf, pdf_bytes, upload
from tests.documents.test_browser_collections import drop_files, record_texts

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

page = test_browser.page  # 1280 by 800, as the other browser tests have it


@pytest.fixture
def sent_frames(page: Page) -> Iterator[list[dict[str, Any]]]:
    frames: list[dict[str, Any]] = []

    def watch(socket: WebSocket) -> None:
        if socket.url.endswith("/ws/chat/"):
            socket.on("framesent", lambda payload: frames.append(json.loads(payload)))

    page.on("websocket", watch)
    yield frames


def test_a_dropped_file_is_read_shown_counted_and_sent_with_the_prompt_and_its_edit(
    page: Page,
    web_server: str,
    owner: Any,
    document_worker: Any,
    inference_worker: Any,
    sent_frames: list[Any],
) -> None:
    collection = collection_create(user=owner, name="Freezer manuals")
    log_in(page, web_server)
    ready(page)
    page.evaluate(
        """() => {
            window.__send = [];
            const send = document.getElementById("send");
            const keep = () => window.__send.push([send.disabled, send.title]);
            new MutationObserver(keep).observe(send, {attributes: true});
        }"""
    )
    record_texts(page, "#attachment-chips")
    pdf = fact_pdf(total=5, fact_page=3, fact=PLANTED_FACT)
    drop_files(page, "#composer", [("freezer log.pdf", pdf)])

    chip = page.locator("#attachment-chips .file-chip")
    expect(chip).to_have_attribute("data-state", "ready", timeout=60_000)
    document = Document.objects.get(name="freezer log.pdf")
    assert document.collection is None and document.owner == owner
    expect(chip.locator(".chip-name")).to_have_text("freezer log.pdf")
    expect(chip.locator(".chip-details")).to_have_text(
        re.compile(rf"^[\d.]+ KB · 5 pages · {document.tokens:,} tokens$")
    )
    # While it was sent and read, Send waited and said why; now it does not.
    waited = page.evaluate("window.__send")
    assert any(d and t.startswith("Waiting for “freezer log.pdf”: ") for d, t in waited), waited
    assert any("Waiting to be read" in t for t in page.evaluate("window.__texts"))
    expect(page.locator("#send")).to_be_enabled()
    # It fits: it goes to the model whole, and the meter counts it so.
    meter = page.locator("#context-text")
    expect(meter).to_have_text(re.compile(rf"tokens \({document.tokens:,} in attached files\)$"))

    page.get_by_label("Attach a collection").select_option(label="Freezer manuals")
    expect(page.locator("#attachment-chips .collection-chip .chip-name")).to_have_text(
        "Freezer manuals"
    )
    # A collection gives passages, a quarter of the window at most (8,192 tokens here).
    expect(meter).to_have_text(
        re.compile(rf"\({document.tokens:,} in attached files, up to 2,048 in passages\)$")
    )
    page.get_by_label("Message").fill("What is the combination of the cryogenic freezer?")
    page.screenshot(path=str(ARTIFACTS / "chat-attachments.png"))
    page.get_by_label("Message").press("Enter")

    sent = next(f for f in sent_frames if f["type"] == "prompt")
    assert sent["documents"] == [document.pk] and sent["collections"] == [collection.pk]
    expect(page.locator("#attachment-chips")).to_be_hidden()
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    question = page.locator("li.message.user").last
    expect(question.locator(".chip-name")).to_have_text(["freezer log.pdf", "Freezer manuals"])
    expect(meter).not_to_contain_text("attached")

    # Edited, the prompt keeps what was attached to it.
    answer = page.locator("li.message.assistant").last
    expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    # The real answer's source: the file went to the model whole, and its chip opens it.
    source = answer.locator(".sources .source-chip")
    expect(source).to_have_text(["1freezer log.pdf"])
    source.click()
    panel = page.locator("#citation-panel")
    expect(panel.locator("h2")).to_have_text("[1] freezer log.pdf")
    expect(panel.locator(".citation-place")).to_have_text("Whole file")
    # A whole file's source keeps its start (chat.grounding.CITED_WHOLE_CHARS).
    expect(panel.locator(".citation-text")).to_contain_text("Page 1. The freezer log")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    question.get_by_role("button", name="Edit this prompt and send it again").click()
    page.get_by_label("Edited prompt").fill("Who set the combination?")
    page.get_by_label("Edited prompt").press("Enter")
    edit = next(f for f in sent_frames if f["type"] == "edit")
    assert edit["documents"] == [document.pk] and edit["collections"] == [collection.pk]
    edited = page.locator("li.message.user").last
    expect(edited.locator(".content")).to_have_text("Who set the combination?")
    expect(edited.locator(".chip-name")).to_have_text(["freezer log.pdf", "Freezer manuals"])


def test_a_pasted_file_and_a_file_that_cannot_be_read(
    page: Page, web_server: str, owner: Any, document_worker: Any
) -> None:
    log_in(page, web_server)
    ready(page)
    page.get_by_label("Message").focus()
    page.evaluate(
        """(text) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([text], "notes.txt", {type: "text/plain"}));
            const paste = new ClipboardEvent(
                "paste", {clipboardData: transfer, bubbles: true, cancelable: true}
            );
            document.getElementById("prompt").dispatchEvent(paste);
        }""",
        "The rotor may spin at 4,000 rpm at most.\n" * 20,
    )
    notes = page.locator(".file-chip", has_text="notes.txt")
    expect(notes).to_have_attribute("data-state", "ready", timeout=60_000)
    expect(page.get_by_label("Message")).to_have_value("")  # the file, not its text

    # A prompt the server refuses gives back its text and its attachments.
    too_long = "x" * 32_001
    page.get_by_label("Message").fill(too_long)
    page.get_by_label("Message").press("Enter")
    page.locator("#status").get_by_role("button", name="Send anyway").click()
    expect(page.locator("#status")).to_contain_text("The prompt is 32001 characters")
    expect(page.get_by_label("Message")).to_have_value(too_long)
    expect(notes).to_have_attribute("data-state", "ready")
    expect(page.locator("li.message")).to_have_count(0)
    page.get_by_label("Message").fill("")

    # The paperclip's picker, with a file the worker cannot read.
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Attach files").click()
    chooser.value.set_files(
        files=[
            {
                "name": "locked.pdf",
                "mimeType": "application/pdf",
                "buffer": pdf_bytes(["secret"], password="pw"),
            }
        ]
    )
    locked = page.locator(".file-chip", has_text="locked.pdf")
    expect(locked).to_have_attribute("data-state", "failed", timeout=60_000)
    sentence = "This PDF is encrypted; remove the password and upload it again."
    expect(locked.locator(".chip-details")).to_contain_text(sentence)
    expect(page.locator("#send")).to_be_disabled()
    expect(page.locator("#attach-status")).to_have_text(
        "“locked.pdf” could not be read: remove it to send."
    )
    expect(page.locator("#send")).to_have_attribute("title", re.compile("remove it to send"))

    # Removing a chip forgets the file: it was uploaded for this message only.
    page.get_by_role("button", name="Remove locked.pdf").click()
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#attach-status")).to_have_text("")
    page.get_by_role("button", name="Remove notes.txt").click()
    expect(page.locator("#attachment-chips")).to_be_hidden()
    wait_until(lambda: not Document.objects.exists())


def test_sources_open_their_passage_and_a_deleted_files_says_so(
    page: Page, web_server: str, owner: Any, clean_documents: None
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    hostile = "freezer <img src=x onerror=alert(1)>.pdf"
    kept = document_upload(user=owner, collection=None, upload=upload(hostile, b"%PDF-1.4\n"))
    passage = "The combination of the cryogenic freezer in room B14 is 4471, set by Dr. Okonkwo."
    conversation = answered(
        owner,
        "Freezer",
        "What is the combination of the cryogenic freezer?",
        "It is **4471** [1], set by Dr. Okonkwo [1, 2]. Not `[1]` in code, nor [7].",
        citations=[
            {
                "n": 1,
                "document": kept.pk,
                "name": hostile,
                "page": 37,
                "passage": 12,
                "text": passage,
                "whole": False,
            },
            {
                "n": 2,
                "document": kept.pk + 1000,
                "name": "old notes.txt",
                "page": None,
                "passage": 3,
                "text": "Dr. Okonkwo set the freezer's code.",
                "whole": False,
            },
        ],
    )
    Message.objects.filter(conversation=conversation, role="user").update(
        attachments={"documents": [kept.pk], "collections": []}
    )
    log_in(page, web_server)
    page.goto(f"{web_server}/c/{conversation.pk}/")
    answer = page.locator("li.message.assistant").last
    expect(answer).to_have_attribute("data-state", "done")

    # The prompt shows what was attached to it.
    expect(page.locator("li.message.user .chip-name")).to_have_text(hostile)
    chips = answer.locator(".sources .source-chip")
    expect(chips).to_have_count(2)
    expect(chips.nth(0)).to_have_text(f"1{hostile}p. 37")
    expect(chips.nth(1)).to_have_text("2old notes.txt")
    links = answer.locator(".content a.cite")
    expect(links).to_have_text(["1", "1", "2"])
    expect(answer.locator(".content code")).to_have_text("[1]")
    expect(answer.locator(".content")).to_contain_text("nor [7].")

    chips.nth(0).click()
    panel = page.locator("#citation-panel")
    expect(panel).to_be_visible()
    expect(panel.locator("h2")).to_have_text(f"[1] {hostile}")
    expect(panel.locator(".citation-place")).to_have_text("Page 37")
    expect(panel.locator(".citation-text")).to_have_text(passage)
    download = panel.get_by_role("link", name=f"Download {hostile}")
    expect(download).to_have_attribute("href", f"/api/documents/{kept.pk}/file")
    expect(page.locator("img")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "citation-panel.png"))
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(chips.nth(0)).to_be_focused()

    links.nth(2).click()
    expect(panel).to_be_visible()
    expect(panel.locator("h2")).to_have_text("[2] old notes.txt")
    expect(panel.locator(".citation-text")).to_have_text("Dr. Okonkwo set the freezer's code.")
    expect(panel.locator(".citation-file")).to_have_text("This file has been deleted.")
    expect(panel.get_by_role("link")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "citation-panel-gone.png"))

    # The kept file deleted too: after a reload both say so, their passages kept.
    document_delete(user=owner, document=kept)
    page.reload()
    answer = page.locator("li.message.assistant").last
    expect(answer.locator(".source-chip.gone")).to_have_count(2)
    expect(page.locator("li.message.user .chip.gone .chip-details")).to_have_text("deleted")
    answer.locator(".content a.cite").first.click()
    expect(page.locator("#citation-panel .citation-text")).to_have_text(passage)
    expect(page.locator("#citation-panel .citation-file")).to_have_text(
        "This file has been deleted."
    )
    assert dialogs == []

    # On a phone the panel rises from the bottom, and nothing is wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.locator("#citation-panel")).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "citation-panel-phone.png"))
