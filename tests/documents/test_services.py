"""Uploads (the web process's cheap checks), indexing run in this process as the worker's horse
runs it (extraction of every kind, every bad input), deletion and collections."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from documents.detection import DocumentRefused
from documents.extraction import ENCRYPTED, IMAGE_ONLY
from documents.models import Collection, Document, Passage, documents_dir
from documents.selectors import passages_search
from documents.services import (
    NotOwner,
    collection_create,
    collection_delete,
    collection_rename,
    collection_share,
    document_delete,
    document_upload,
)
from tests.documents.conftest import (
    docx_bomb_bytes,
    docx_bytes,
    image_only_pdf_bytes,
    index_here,
    pdf_bytes,
    upload,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def collection(owner: Any) -> Collection:
    return collection_create(user=owner, name="Manuals")


def indexed(owner: Any, collection: Collection, name: str, content: bytes) -> Document:
    document = document_upload(user=owner, collection=collection, upload=upload(name, content))
    assert document.state == "queued"
    return index_here(document)


def passage_texts(document: Document) -> list[str]:
    return list(document.passages.order_by("ordinal").values_list("text", flat=True))


def stored_files() -> set[str]:
    directory = documents_dir()
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


def index_rowids(word: str) -> set[int]:
    """The passage ids the database's own full-text index holds for `word`."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "SELECT rowid FROM documents_passage_fts WHERE documents_passage_fts MATCH %s",
                [f'"{word}"'],
            )
        else:
            cursor.execute(
                "SELECT id FROM documents_passage WHERE search_vector @@ to_tsquery('english', %s)",
                [word],
            )
        return {row[0] for row in cursor.fetchall()}


def test_it_stores_the_upload_under_a_random_name_and_queues_it(
    owner: Any, collection: Collection
) -> None:
    document = document_upload(
        user=owner, collection=collection, upload=upload("../../etc/passwd.txt", b"hello there")
    )
    assert document.name == "passwd.txt"
    assert document.path.parent == documents_dir()
    assert len(document.stored_name) == 32 and "passwd" not in document.stored_name
    assert document.path.read_bytes() == b"hello there"
    assert (document.state, document.kind, document.size_bytes) == ("queued", "text", 11)
    assert document.path.stat().st_mode & 0o077 == 0  # the owner's only
    odd = document_upload(
        user=owner, collection=collection, upload=upload("re\r\nport\x00.txt", b"words")
    )
    assert odd.name == "report.txt"  # it goes into a Content-Disposition header


def test_it_extracts_a_pdf_page_by_page_with_the_page_numbers(
    owner: Any, collection: Collection
) -> None:
    document = indexed(
        owner, collection, "r.pdf", pdf_bytes(["First page words.", "Second page: zebra."])
    )
    assert document.state == "ready", document.error
    assert (document.pages, document.pages_done, document.pages_total) == (2, 2, 2)
    rows = list(document.passages.values_list("page", "text"))
    assert rows == [(1, "First page words."), (2, "Second page: zebra.")]
    assert document.tokens > 0 and document.chars == len("First page words.Second page: zebra.")


def test_it_extracts_a_docx_with_its_tables(owner: Any, collection: Collection) -> None:
    content = docx_bytes(
        ["Safety rules for the centrifuge.", "Always balance the rotor."],
        table=[["Speed", "Limit"], ["max rpm", "15000"]],
    )
    document = indexed(owner, collection, "rules.docx", content)
    assert (document.state, document.kind) == ("ready", "docx"), document.error
    (text,) = passage_texts(document)
    assert text == (
        "Safety rules for the centrifuge.\nAlways balance the rotor.\nSpeed | Limit\n"
        "max rpm | 15000"
    )


def test_it_extracts_html_without_its_scripts_and_styles(
    owner: Any, collection: Collection
) -> None:
    html = (
        b"<!doctype html><html><head><title>T</title><style>p{color:red}</style></head>"
        b"<body><h1>Kettle manual</h1><script>alert('x')</script>"
        b"<p>Descale it <b>monthly</b>.</p>"
        b"<table><tr><th>Part</th><th>When</th></tr>"
        b"<tr><td>Filter</td><td>Rinse  weekly</td></tr></table></body></html>"
    )
    document = indexed(owner, collection, "kettle.bin", html)
    assert (document.state, document.kind) == ("ready", "html"), document.error
    (text,) = passage_texts(document)
    assert text == "Kettle manual\nDescale it monthly.\nPart | When\nFilter | Rinse weekly"
    assert "alert" not in text and "color" not in text


def test_it_reads_markdown_csv_and_latin1_text_as_text(owner: Any, collection: Collection) -> None:
    markdown = indexed(owner, collection, "a.md", b"# Setup\n\nRun `make`.\n")
    csv = indexed(owner, collection, "b.csv", b"part,qty\nbolt,4\nnut,9\n")
    french = "Pour la crème brûlée, préchauffez le four à 150 degrés et fouettez les œufs."
    latin = indexed(owner, collection, "c.txt", french.replace("œ", "oe").encode("latin-1"))
    assert [d.kind for d in (markdown, csv, latin)] == ["markdown", "csv", "text"]
    assert passage_texts(markdown) == ["# Setup\n\nRun `make`."]
    assert passage_texts(csv) == ["part,qty\nbolt,4\nnut,9"]
    assert passage_texts(latin) == [french.replace("œ", "oe")]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (pdf_bytes(["secret"], password="hunter2"), ENCRYPTED),
        (image_only_pdf_bytes(), IMAGE_ONLY),
        (b"%PDF-1.7\n" + b"\x8f garbage that is no PDF structure at all " * 50, "damaged"),
    ],
    ids=["encrypted", "image-only", "broken"],
)
def test_a_bad_pdf_fails_with_a_sentence_saying_what_to_do(
    owner: Any, collection: Collection, content: bytes, error: str
) -> None:
    document = indexed(owner, collection, "bad.pdf", content)
    assert document.state == "failed"
    assert error in document.error
    assert document.error.endswith(".")
    assert not document.passages.exists()


def test_it_refuses_a_docx_zip_bomb_at_upload_and_keeps_nothing(
    owner: Any, collection: Collection
) -> None:
    before = stored_files()
    with pytest.raises(DocumentRefused) as refused:
        document_upload(
            user=owner, collection=collection, upload=upload("t.docx", docx_bomb_bytes())
        )
    assert refused.value.code == "zip_bomb"
    assert not Document.objects.exists()
    assert stored_files() == before


def test_it_refuses_a_file_over_the_size_limit_and_keeps_nothing(
    owner: Any, collection: Collection
) -> None:
    before = stored_files()
    with override_settings(WIZ_DOCUMENT_MAX_BYTES=1000), pytest.raises(DocumentRefused) as refused:
        document_upload(user=owner, collection=collection, upload=upload("a.txt", b"x" * 1001))
    assert refused.value.code == "file_too_large"
    assert "at most" in str(refused.value)
    assert not Document.objects.exists()
    assert stored_files() == before


def test_it_refuses_a_file_that_takes_its_owner_past_their_limit(
    owner: Any, outsider: Any, collection: Collection
) -> None:
    with override_settings(WIZ_DOCUMENTS_MAX_BYTES_PER_USER=1500):
        document_upload(user=owner, collection=collection, upload=upload("a.txt", b"a " * 400))
        with pytest.raises(DocumentRefused) as refused:
            document_upload(user=owner, collection=collection, upload=upload("b.txt", b"b " * 400))
        # Another person's files count against their own limit only.
        theirs = collection_create(user=outsider, name="Mine")
        document_upload(user=outsider, collection=theirs, upload=upload("c.txt", b"c " * 400))
    assert refused.value.code == "quota_exceeded"
    assert "Delete documents" in str(refused.value)
    assert Document.objects.filter(owner=owner).count() == 1


def test_deleting_a_document_removes_its_file_passages_and_index_entries(
    owner: Any, outsider: Any, collection: Collection, django_capture_on_commit_callbacks: Any
) -> None:
    keep = indexed(owner, collection, "keep.txt", b"the aardvark stays here")
    gone = indexed(owner, collection, "gone.txt", b"the aardvark leaves with the okapi")
    gone_ids = set(gone.passages.values_list("pk", flat=True))
    assert gone_ids and index_rowids("okapi") == gone_ids
    assert len(index_rowids("aardvark")) == 2
    with pytest.raises(NotOwner):
        document_delete(user=outsider, document=gone)

    with django_capture_on_commit_callbacks(execute=True):
        document_delete(user=owner, document=gone)

    assert not gone.path.exists() and keep.path.exists()
    assert not Passage.objects.filter(pk__in=gone_ids).exists()
    assert index_rowids("okapi") == set()
    assert index_rowids("aardvark") == set(keep.passages.values_list("pk", flat=True))
    hits = passages_search(user=owner, question="aardvark okapi")
    assert [h.document.name for h in hits] == ["keep.txt"]


def test_a_collection_is_renamed_shared_and_deleted_by_its_owner_only(
    owner: Any, staff: Any, member: Any, collection: Collection
) -> None:
    with pytest.raises(DocumentRefused, match="already have a collection"):
        collection_create(user=owner, name="  Manuals ")
    with pytest.raises(NotOwner):
        collection_rename(user=staff, collection=collection, name="Mine now")
    assert collection_rename(user=owner, collection=collection, name="Guides").name == "Guides"
    with pytest.raises(NotOwner, match="Only staff"):
        collection_share(user=owner, collection=collection, everyone=True, groups=[])
    staffs = collection_create(user=staff, name="Handbook")
    with pytest.raises(NotOwner):  # staff share their own collections, not other people's
        collection_share(user=staff, collection=collection, everyone=True, groups=[])
    with pytest.raises(DocumentRefused, match="no group named nope"):
        collection_share(user=staff, collection=staffs, everyone=False, groups=["nope"])
    shared = collection_share(user=staff, collection=staffs, everyone=False, groups=["lab"])
    assert [g.name for g in shared.shared_groups.all()] == ["lab"]
    document = indexed(owner, collection, "a.txt", b"words")
    with pytest.raises(NotOwner):
        collection_delete(user=member, collection=collection)
    collection_delete(user=owner, collection=collection)
    assert not Document.objects.filter(pk=document.pk).exists()
