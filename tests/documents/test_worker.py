"""Indexing on the real documents worker: a 60-page PDF with a fact planted on page 37 is
found by a question about it (on SQLite, and on PostgreSQL with DATABASE_URL), progress
reaches the owner's socket, and a job that dies leaves its document failed with a sentence."""

from __future__ import annotations

import functools
import os
import signal
from typing import Any

import django_rq
import psutil
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import override_settings

from documents.models import Collection, Document
from documents.selectors import passages_search
from documents.services import WORKER_DIED, collection_create, document_upload
from tests.conftest import session_cookie
from tests.documents.conftest import (
    FACT_QUESTION,
    FILLER,
    PLANTED_FACT,
    fact_pdf,
    pdf_bytes,
    start_document_worker,
    upload,
)
from tests.processes import Child, wait_for
from wizweb.asgi import application

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]


def state_of(document: Document) -> Document:
    document.refresh_from_db()
    return document


def finished(document: Document, timeout: float = 120) -> Document:
    return wait_for(
        lambda: (d := state_of(document)).state in ("ready", "failed") and d,
        timeout=timeout,
        what=f"document {document.pk} to be indexed",
    )


def test_a_fact_on_page_37_of_60_is_the_first_passage_found(
    owner: Any, outsider: Any, document_worker: Child
) -> None:
    collection = collection_create(user=owner, name="Freezer manual")
    document = document_upload(
        user=owner, collection=collection, upload=upload("manual.pdf", fact_pdf(fact=PLANTED_FACT))
    )
    done = finished(document)
    assert done.state == "ready", done.error
    assert (done.pages, done.pages_done, done.pages_total) == (60, 60, 60)

    hits = passages_search(user=owner, question=FACT_QUESTION)

    assert len(hits) == 8, "every page shares words with the question: a full page of hits"
    assert hits[0].passage.page == 37
    assert "4471" in hits[0].passage.text
    assert hits[0].document.name == "manual.pdf"
    assert passages_search(user=outsider, question=FACT_QUESTION) == []
    vendor = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(f"\n{vendor}: page-37 passage first among {len(hits)} hits")


@pytest.mark.usefixtures("channel_layer_closed")
async def test_progress_reaches_the_owners_socket_and_nobody_elses(
    owner: Any, outsider: Any, document_worker: Child
) -> None:
    sockets = []
    for user in (owner, outsider):
        cookie = await sync_to_async(session_cookie)(user)
        socket = WebsocketCommunicator(
            application,
            "/ws/documents/",
            headers=[
                (b"host", b"testserver"),
                (b"origin", b"http://testserver"),
                (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()),
            ],
        )
        assert (await socket.connect())[0]
        sockets.append(socket)
    mine, theirs = sockets
    pages = [f"Page {n}. " + FILLER * 4 for n in range(1, 21)]

    def add() -> Document:
        collection = collection_create(user=owner, name="c")
        return document_upload(
            user=owner, collection=collection, upload=upload("p.pdf", pdf_bytes(pages))
        )

    document = await sync_to_async(add)()
    frames = []
    while True:
        frame = await mine.receive_json_from(timeout=120)
        assert frame.get("document") == document.pk
        frames.append(frame)
        if frame["type"] != "document.progress":
            break
    assert frames[-1] == {
        "type": "document.ready",
        "document": document.pk,
        "pages": 20,
        "tokens": frames[-1]["tokens"],
        "passages": 20,
    }
    progress = [(f["pages_done"], f["pages_total"]) for f in frames[:-1]]
    assert progress[0] == (0, 0) and progress[-1] == (20, 20)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert {f["state"] for f in frames[:-1]} == {"indexing"}
    assert await theirs.receive_nothing(timeout=0.5)
    for socket in sockets:
        await socket.disconnect()

    # A page that connects later is told the state at once.
    late = WebsocketCommunicator(
        application,
        "/ws/documents/",
        headers=[
            (b"host", b"testserver"),
            (b"origin", b"http://testserver"),
            (
                b"cookie",
                f"{settings.SESSION_COOKIE_NAME}="
                f"{await sync_to_async(session_cookie)(owner)}".encode(),
            ),
        ],
    )
    assert (await late.connect())[0]
    assert (await late.receive_json_from(timeout=10))["type"] == "document.ready"
    await late.disconnect()


@functools.cache
def _long_pdf() -> bytes:
    """A PDF that takes seconds to read (see _slow_pdf): a plain 300-page one was read in under
    a second, before a test could catch it being read, and that test then waited in vain."""
    return _slow_pdf(pages=160)


def _start_long_indexing(owner: Any) -> Document:
    collection: Collection = collection_create(user=owner, name="Long")
    document = document_upload(
        user=owner, collection=collection, upload=upload("long.pdf", _long_pdf())
    )

    def under_way() -> Document | None:
        now = state_of(document)
        assert now.state in ("queued", "indexing"), f"it was read whole first: {now.state}"
        return now if now.state == "indexing" and now.pages_done > 0 else None

    return wait_for(under_way, timeout=120, what="the indexing to be under way")


def _horse_of(worker: Child) -> psutil.Process:
    return wait_for(
        lambda: next(iter(psutil.Process(worker.pid).children()), None),
        timeout=10,
        what="the worker's horse",
    )


def test_a_horse_killed_mid_file_fails_its_document_with_a_sentence(
    owner: Any, document_worker: Child
) -> None:
    document = _start_long_indexing(owner)
    _horse_of(document_worker).send_signal(signal.SIGKILL)
    failed = wait_for(
        lambda: (d := state_of(document)).state != "indexing" and d,
        timeout=30,
        what="the document to leave indexing",
    )
    assert (failed.state, failed.error) == ("failed", WORKER_DIED)
    assert not failed.passages.exists()


def test_a_worker_killed_with_its_horse_leaves_the_document_failed_by_the_next_worker(
    owner: Any, clean_documents: None, log_dir: Any
) -> None:
    first = start_document_worker(log_dir)
    try:
        document = _start_long_indexing(owner)
        horse = _horse_of(first)  # rq gives the horse a session of its own
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its horse, nothing said
        horse.kill()
        first.process.wait()
    finally:
        first.stop()
    assert state_of(document).state == "indexing"
    second = start_document_worker(log_dir)
    try:
        failed = wait_for(
            lambda: (d := state_of(document)).state != "indexing" and d,
            timeout=30,
            what="the reaper to fail the document",
        )
    finally:
        second.stop()
    assert (failed.state, failed.error) == ("failed", WORKER_DIED)


def test_a_queued_document_whose_job_redis_forgot_is_queued_again_and_indexed(
    owner: Any, clean_documents: None, log_dir: Any
) -> None:
    collection = collection_create(user=owner, name="c")
    document = document_upload(
        user=owner, collection=collection, upload=upload("a.txt", b"the quokka smiles")
    )
    forgotten = document.job_id
    queue = django_rq.get_queue(settings.DOCUMENT_QUEUE)
    assert queue.job_ids == [forgotten]
    queue.empty()  # what a restart of the private Redis does: the queue and its jobs are gone
    worker = start_document_worker(log_dir)
    try:
        done = finished(document, timeout=60)
    finally:
        worker.stop()
    assert done.state == "ready", done.error
    assert done.job_id != forgotten
    assert [h.document.pk for h in passages_search(user=owner, question="quokka")] == [done.pk]


def _slow_pdf(pages: int = 400) -> bytes:
    """Pages of 1,200 tiny text runs each: pypdf reads about 40 of them a second on the 2-core
    box, so 400 take about ten times the one-second limit given below."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=4)
    pdf.set_auto_page_break(False)
    for _ in range(pages):
        pdf.add_page()
        for y in range(60):
            for x in range(20):
                pdf.text(5 + x * 10, 5 + y * 4.5, "ab")
    return bytes(pdf.output())


def test_a_file_that_outlasts_the_time_limit_fails_with_a_sentence(
    owner: Any, document_worker: Child
) -> None:
    collection = collection_create(user=owner, name="c")
    with override_settings(WIZ_DOCUMENT_INDEX_TIMEOUT=1):
        document = document_upload(
            user=owner, collection=collection, upload=upload("slow.pdf", _slow_pdf())
        )
    done = finished(document, timeout=90)
    assert done.state == "failed"
    assert done.error == (
        "Reading this file took longer than 1 s, the limit; split it into smaller files and "
        "upload those."
    )
    assert not done.passages.exists()
    assert done.pages_done < done.pages_total == 400  # stopped part-way
