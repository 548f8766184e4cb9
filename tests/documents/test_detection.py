"""What an upload is, from its content whatever its name; zip bombs refused before opening."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from documents.detection import DocumentRefused, detect, docx_check
from tests.documents.conftest import docx_bomb_bytes, docx_bytes, pdf_bytes

# The smallest PNG: a 1x1 pixel.
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00"
    b"\x00\x00IEND\xaeB`\x82"
)


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / "stored-under-a-random-name"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("notes.txt", b"Plain words about the weather.\nAnother line.", "text"),
        (
            "README",
            b"# Title\n\nSome *text* and a [link](http://x.org).\n\n- one\n- two\n",
            "markdown",
        ),
        ("data.txt", b"name,age,city\nTom,3,Oslo\nAnn,5,Rome\nBo,7,Lima\n", "csv"),
        ("page.txt", b"<!DOCTYPE html><html><body><p>Hi</p></body></html>", "html"),
        ("snippet.py", b"def f(x):\n    return x + 1\n", "code"),
        (
            "latin.txt",
            "Caf\xe9 cr\xe8me br\xfbl\xe9e, na\xefve \xe9l\xe8ve.".encode("latin-1"),
            "text",
        ),
    ],
)
def test_it_detects_text_kinds_from_the_content(
    tmp_path: Path, name: str, content: bytes, kind: str
) -> None:
    assert detect(write(tmp_path, name, content), name=name).kind == kind


def test_a_pdf_named_as_text_is_a_pdf_and_a_docx_named_pdf_is_a_docx(tmp_path: Path) -> None:
    assert detect(write(tmp_path, "x", pdf_bytes(["hi"])), name="notes.txt").kind == "pdf"
    assert detect(write(tmp_path, "x", docx_bytes(["hi"])), name="paper.pdf").kind == "docx"


def test_it_refuses_an_image_with_a_misleading_name_with_a_sentence(tmp_path: Path) -> None:
    with pytest.raises(DocumentRefused) as refused:
        detect(write(tmp_path, "x", PNG), name="report.pdf")
    assert refused.value.code == "unsupported_type"
    message = str(refused.value)
    assert "Portable Network Graphics file (.png) by its content" in message
    assert "PDF or DOCX" in message


def test_it_refuses_binary_junk_and_empty_files(tmp_path: Path) -> None:
    junk = zlib.compress(bytes(range(256)) * 64)  # compressed bytes: no magic, not text
    with pytest.raises(DocumentRefused, match="not text"):
        detect(write(tmp_path, "x", b"\x00\x01" + junk), name="a.txt")
    with pytest.raises(DocumentRefused, match="empty"):
        detect(write(tmp_path, "x", b""), name="a.txt")


def test_it_refuses_a_zip_that_is_not_a_word_document(tmp_path: Path) -> None:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("photos/cat.txt", "meow")
    with pytest.raises(DocumentRefused, match="not a Word document"):
        detect(write(tmp_path, "x", out.getvalue()), name="cat.docx")


def test_it_refuses_a_docx_zip_bomb_from_its_directory_alone(tmp_path: Path) -> None:
    bomb = docx_bomb_bytes(300)
    assert len(bomb) < 2 * 1024 * 1024  # small on the wire
    path = write(tmp_path, "x", bomb)
    with pytest.raises(DocumentRefused) as refused:
        detect(path, name="thesis.docx")
    assert refused.value.code == "zip_bomb"
    assert "zip bomb" in str(refused.value)
    with pytest.raises(DocumentRefused):
        docx_check(path)
