"""Fixtures for documents: real files written in the test (PDFs with fpdf2, DOCX with
python-docx, zips), a member of a group a collection is shared with, and a real documents
worker as a subprocess."""

from __future__ import annotations

import functools
import io
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django_rq
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group
from django.core.files.uploadedfile import SimpleUploadedFile
from rq.worker import Worker

from documents.events import DocumentEvents
from documents.models import Collection, Document
from documents.services import collection_create, collection_share, document_index
from tests.conftest import PASSWORD
from tests.processes import MANAGE, Child, child_env, wait_for
from wizweb.channels_sender import channel_sender
from wizweb.redis_server import redis_connection

FILLER = (
    "This page describes routine laboratory housekeeping: benches are wiped, pipettes are "
    "calibrated, glassware is rinsed, and the inventory sheet is updated before leaving. "
)


def pdf_bytes(pages: list[str], *, password: str | None = None) -> bytes:
    """A real PDF with one page per text (fpdf2's core font: Latin-1 text only)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    if password is not None:
        pdf.set_encryption(owner_password="owner-" + password, user_password=password)
    return bytes(pdf.output())


def image_only_pdf_bytes(pages: int = 3) -> bytes:
    """Pages with drawings and no text at all: what a scanner without OCR gives."""
    from fpdf import FPDF

    pdf = FPDF()
    for i in range(pages):
        pdf.add_page()
        pdf.set_fill_color(40 * i, 100, 200)
        pdf.rect(20, 20, 150, 200, style="F")
    return bytes(pdf.output())


def fact_pdf(total: int = 60, fact_page: int = 37, fact: str = "") -> bytes:
    pages = []
    for number in range(1, total + 1):
        # Every page shares words with the question, so the ranking, not a lone match, decides.
        text = f"Page {number}. {DECOY} " + FILLER * 6
        if number == fact_page:
            text += fact
        pages.append(text)
    return pdf_bytes(pages)


DECOY = "The freezer log and the combination of reagents were checked."
PLANTED_FACT = "The combination of the cryogenic freezer in room B14 is 4471, set by Dr. Okonkwo."
FACT_QUESTION = "What is the combination of the cryogenic freezer?"


def docx_bytes(paragraphs: list[str], table: list[list[str]] | None = None) -> bytes:
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


@functools.cache
def docx_bomb_bytes(megabytes: int = 300) -> bytes:
    """A zip shaped like a DOCX whose one part unpacks to `megabytes` of zeros: a few hundred
    kilobytes on the wire."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as part:
            block = b"\0" * (1 << 20)
            for _ in range(megabytes):
                part.write(block)
    return out.getvalue()


def upload(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content)


def index_here(document: Document) -> Document:
    """Run a document's indexing job in this process, as the worker's horse does."""
    result = document_index(
        document_id=document.pk,
        job_id=document.job_id,
        events=DocumentEvents(channel_sender, user_id=document.owner_id),
        connection=redis_connection(),
    )
    assert result is not None
    return result


@pytest.fixture
def member(db: None) -> AbstractUser:
    """bob, in the group `lab`."""
    bob = get_user_model().objects.create_user("bob", password=PASSWORD)
    bob.groups.add(Group.objects.create(name="lab"))
    return bob


@pytest.fixture
def shared_collection(staff: Any, member: Any) -> Collection:
    """A staff member's collection shared with `lab` (bob's group)."""
    collection = collection_create(user=staff, name="Lab protocols")
    return collection_share(user=staff, collection=collection, everyone=False, groups=["lab"])


@pytest.fixture
def clean_documents() -> Iterator[None]:
    django_rq.get_queue(settings.DOCUMENT_QUEUE).empty()
    yield
    django_rq.get_queue(settings.DOCUMENT_QUEUE).empty()


def document_worker_command(name: str) -> list[str]:
    return [
        sys.executable,
        MANAGE,
        "rqworker",
        settings.DOCUMENT_QUEUE,
        "--name",
        name,
        "--worker-class",
        "documents.worker.DocumentWorker",
    ]


def start_document_worker(log_dir: Path) -> Child:
    name = f"test-documents-{uuid.uuid4().hex[:6]}"
    child = Child(name, document_worker_command(name), child_env(), log_dir)

    def registered() -> bool:
        if child.process.poll() is not None:
            raise RuntimeError(f"The documents worker exited:\n{child.output()}")
        return any(w.name == name for w in Worker.all(connection=redis_connection()))

    wait_for(registered, timeout=60, what=f"the documents worker {name} to register")
    return child


@pytest.fixture
def document_worker(clean_documents: None, log_dir: Path) -> Iterator[Child]:
    child = start_document_worker(log_dir)
    yield child
    child.stop()
