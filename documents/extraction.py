"""Text out of a stored file, page by page: run on the documents worker only (never in the web
process), under the job's time limit. Every failure a person can fix is a DocumentRefused with
a sentence; anything else is a bug and fails the job with its type named."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rq.timeouts import JobTimeoutException

from documents.detection import DocumentRefused, docx_check, text_decode
from documents.models import Document

Progress = Callable[[int, int], None]  # (pages done, pages in all)

ENCRYPTED = "This PDF is encrypted; remove the password and upload it again."
IMAGE_ONLY = "This PDF has no text layer (scanned pages?); OCR it first."
NO_TEXT = "This file holds no text to index."


HTML_BLOCKS = [
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
    "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol",
    "p", "pre", "section", "table", "tr", "ul",
]  # fmt: skip


@dataclass(frozen=True)
class PageText:
    page: int | None  # 1-based for PDFs; None for formats without pages
    text: str


def extract(path: Path, *, kind: str, encoding: str = "", progress: Progress) -> list[PageText]:
    """The text of the file, in reading order; `progress` hears of every page."""
    if kind == Document.Kind.PDF:
        pages = _pdf(path, progress)
    elif kind == Document.Kind.DOCX:
        pages = _docx(path, progress)
    elif kind == Document.Kind.HTML:
        pages = _html(path, encoding, progress)
    else:
        pages = _text(path, encoding, progress)
    if not any(p.text.strip() for p in pages):
        raise DocumentRefused(IMAGE_ONLY if kind == Document.Kind.PDF else NO_TEXT, "no_text")
    return pages


def _text(path: Path, encoding: str, progress: Progress) -> list[PageText]:
    progress(0, 1)
    text = text_decode(path.read_bytes(), encoding or "utf-8").replace("\r\n", "\n")
    progress(1, 1)
    return [PageText(None, text)]


def _html(path: Path, encoding: str, progress: Progress) -> list[PageText]:
    from bs4 import BeautifulSoup

    progress(0, 1)
    markup = text_decode(path.read_bytes(), encoding or "utf-8")
    # The standard library's parser: no native code reads what strangers upload.
    soup = BeautifulSoup(markup, "html.parser")
    for hidden in soup(["script", "style", "noscript", "template", "svg", "head"]):
        hidden.decompose()
    # A line per block, inline elements kept within their line ("Descale it <b>monthly</b>."
    # stays one sentence), runs of spaces folded as a browser folds them.
    for block in soup.find_all(HTML_BLOCKS):
        block.insert_after("\n")
    for cell in soup.find_all(["td", "th"]):
        if cell.find_previous_sibling(["td", "th"]) is not None:
            cell.insert_before(" | ")  # as DOCX tables read
    lines = (" ".join(line.split()) for line in soup.get_text().splitlines())
    text = "\n".join(line for line in lines if line)
    progress(1, 1)
    return [PageText(None, text)]


def _pdf(path: Path, progress: Progress) -> list[PageText]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            # An owner password alone (printing or copying locked) still opens with "".
            try:
                if not reader.decrypt(""):
                    raise DocumentRefused(ENCRYPTED, "encrypted_pdf")
            except (FileNotDecryptedError, DependencyError, NotImplementedError):
                raise DocumentRefused(ENCRYPTED, "encrypted_pdf") from None
        total = len(reader.pages)
    except DocumentRefused:
        raise
    except FileNotDecryptedError:
        raise DocumentRefused(ENCRYPTED, "encrypted_pdf") from None
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        raise DocumentRefused(
            f"This PDF is damaged and cannot be read ({type(exc).__name__}: {str(exc)[:120]}); "
            "open it and save or print it to a new PDF, then upload that.",
            "broken_pdf",
        ) from None
    if total == 0:
        raise DocumentRefused(
            "This PDF is damaged: no page of it could be read. Open it and save or print it "
            "to a new PDF, then upload that.",
            "broken_pdf",
        )
    pages = []
    progress(0, total)
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text() or ""
        except FileNotDecryptedError:
            raise DocumentRefused(ENCRYPTED, "encrypted_pdf") from None
        except JobTimeoutException:  # the job's time limit, raised wherever the page was
            raise
        except Exception:  # one bad page (a broken font, a bad stream) loses its text only
            text = ""
        pages.append(PageText(number, text))
        progress(number, total)
    return pages


def _docx(path: Path, progress: Progress) -> list[PageText]:
    import docx
    from docx.table import Table

    docx_check(path)  # again: the file on disk is what is opened, whatever the upload said
    progress(0, 1)
    try:
        document = docx.Document(str(path))
    except JobTimeoutException:
        raise
    except Exception as exc:  # python-docx raises many kinds for a damaged package
        raise DocumentRefused(
            f"This DOCX is damaged and cannot be read ({type(exc).__name__}); open it in a "
            "word processor, save it again and upload that.",
            "broken_file",
        ) from None
    blocks: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                cells = [cell.text.strip() for cell in row.cells]
                blocks.append(" | ".join(c for c in cells if c))
        else:
            blocks.append(block.text)
    progress(1, 1)
    return [PageText(None, "\n".join(b for b in blocks if b.strip()))]
