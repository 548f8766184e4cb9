"""What an uploaded file is, from its content (never its name), and whether a zip is safe to
open. Cheap enough for the web process: it reads the first bytes and a zip's directory only.

Binary formats are recognised by their magic numbers (puremagic, with its own database); a PDF
by its header; a DOCX is a zip with `word/document.xml`; anything else must decode as text
(charset-normalizer for what is not UTF-8), and is then told apart as HTML, CSV, Markdown or
plain text by its content. Only the kind of a text file may come from the name: a `.py` file
that is text is called source code (what it is does not change how it is read)."""

from __future__ import annotations

import codecs
import csv
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import puremagic
from charset_normalizer import CharsetMatch, from_bytes

from documents.models import Document

SAMPLE_BYTES = 64 * 1024
# A DOCX whose parts would unpack to more than this, or any part of which is compressed more
# than this ratio (real Word files stay far below both), is refused as a zip bomb.
DOCX_MAX_UNZIPPED = 256 * 1024 * 1024
DOCX_MAX_RATIO = 200
DOCX_MAX_MEMBERS = 5000
ACCEPTED = "text, Markdown, source code, CSV, HTML, PDF or DOCX"
CODE_SUFFIXES = {
    ".py", ".js", ".ts", ".tsx", ".jsx", ".c", ".h", ".cc", ".cpp", ".hpp", ".java", ".kt",
    ".go", ".rs", ".rb", ".php", ".cs", ".swift", ".scala", ".sh", ".bash", ".sql", ".r",
    ".lua", ".pl", ".hs", ".ml", ".ex", ".exs", ".erl", ".clj", ".dart", ".m", ".vue",
    ".css", ".scss", ".toml", ".yaml", ".yml", ".ini", ".cfg", ".json", ".xml", ".mk",
}  # fmt: skip
MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdown", ".mkd"}
_HTML = re.compile(
    rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.I | re.S
)
_MARKDOWN = re.compile(
    r"^(#{1,6} \S|```|\s*[-*+] \S|\s*\d+\. \S|>\s)|\[[^\]\n]+\]\([^)\s]+\)", re.M
)


class DocumentRefused(Exception):
    """A file that will not be indexed; the message says why and what to do."""

    def __init__(self, message: str, code: str = "unsupported_type") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Detected:
    kind: str
    encoding: str = ""  # for text kinds: how its sample decoded


def detect(path: Path, *, name: str = "") -> Detected:
    """The kind of the file at `path`, or DocumentRefused with a sentence."""
    with path.open("rb") as handle:
        head = handle.read(SAMPLE_BYTES)
    if not head:
        raise DocumentRefused("The file is empty; there is nothing to index.", "empty_file")
    if head.lstrip(b"\x00\t\r\n ")[:5] == b"%PDF-" or b"%PDF-" in head[:1024]:
        return Detected(Document.Kind.PDF)
    if head[:4] == b"PK\x03\x04":
        docx_check(path)
        return Detected(Document.Kind.DOCX)
    encoding = text_encoding(head)
    if encoding is None:
        raise DocumentRefused(
            f"{_binary_name(head)} cannot be indexed; upload {ACCEPTED} files.", "unsupported_type"
        )
    if _HTML.match(head.removeprefix(codecs.BOM_UTF8)):
        return Detected(Document.Kind.HTML, encoding)
    text = head.decode(encoding, errors="replace")
    suffix = Path(name).suffix.lower()
    if _looks_like_csv(text):
        return Detected(Document.Kind.CSV, encoding)
    if suffix in MARKDOWN_SUFFIXES or len(_MARKDOWN.findall(text)) >= 2:
        return Detected(Document.Kind.MARKDOWN, encoding)
    if suffix in CODE_SUFFIXES:
        return Detected(Document.Kind.CODE, encoding)
    return Detected(Document.Kind.TEXT, encoding)


def _binary_name(head: bytes) -> str:
    """'This PNG image' or 'This file (by its content, not text)': for the refusal."""
    try:
        guess = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        guess = []
    if guess:
        what = _article(guess[0].name)
        if guess[0].extension:
            what += f" ({guess[0].extension})"
        return f"This file is {what} by its content, whatever its name, and"
    return "This file is not text (by its content, whatever its name), and"


def _article(name: str) -> str:
    name = name.strip() or "binary file"
    return f"an {name}" if name[0].lower() in "aeiou" else f"a {name}"


def text_encoding(head: bytes) -> str | None:
    """The encoding the sample reads as text in, or None when it is binary."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if b"\x00" in head:
        return None
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3:  # the sample cut a character in two
            return "utf-8"
    best = _charset_guess(head)
    return None if best is None else str(best.encoding)


def text_decode(data: bytes, encoding: str) -> str:
    """The whole file's text: in the sample's encoding, or charset-normalizer's best guess for
    the whole, or (never failing) Latin-1."""
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        pass
    best = _charset_guess(data)
    if best is not None:
        return str(best)
    return data.decode("latin-1")


def _charset_guess(data: bytes) -> CharsetMatch | None:
    """charset-normalizer's best guess; among guesses it rates the same, Windows-1252 (what
    most legacy Western text is, and what browsers read "latin-1" as): a short French text
    rates as high in Central European cp1250, which turns its accents into others."""
    matches = list(from_bytes(data))
    if not matches:
        return None
    best = matches[0]
    for match in matches:
        if (match.chaos, match.coherence) == (best.chaos, best.coherence) and (
            match.encoding == "cp1252"
        ):
            return match
    return best


def _looks_like_csv(text: str) -> bool:
    lines = [line for line in text.splitlines()[:50] if line.strip()]
    if len(lines) < 2:
        return False
    try:
        dialect = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=",;\t|")
    except csv.Error:
        return False
    rows = list(
        csv.reader(io.StringIO("\n".join(lines[:-1] if len(lines) > 2 else lines)), dialect)
    )
    widths = {len(row) for row in rows}
    return len(widths) == 1 and widths.pop() >= 2


def docx_check(path: Path) -> None:
    """Refuse a zip that is not a DOCX, or that would unpack to too much (a zip bomb). Reads
    only the zip's directory; reading a part later stops at its declared size."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            names = {m.filename for m in members}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DocumentRefused(
            f"This zip file is damaged ({exc}); save the document again and upload it.",
            "broken_file",
        ) from None
    if "word/document.xml" not in names:
        raise DocumentRefused(
            f"This is a zip archive but not a Word document (DOCX); upload {ACCEPTED} files.",
            "unsupported_type",
        )
    if len(members) > DOCX_MAX_MEMBERS:
        raise DocumentRefused(
            f"This DOCX holds {len(members):,} parts (a Word file has a few dozen); it looks "
            "like a zip bomb and is refused.",
            "zip_bomb",
        )
    total = sum(m.file_size for m in members)
    if total > DOCX_MAX_UNZIPPED:
        raise DocumentRefused(
            f"This DOCX would unpack to {total / 2**20:,.0f} MB (at most "
            f"{DOCX_MAX_UNZIPPED // 2**20} MB); it looks like a zip bomb and is refused.",
            "zip_bomb",
        )
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > 1024 * 1024 and ratio > DOCX_MAX_RATIO:
            raise DocumentRefused(
                f"A part of this DOCX ({member.filename}) is compressed {ratio:,.0f} to 1 (real "
                f"documents stay under {DOCX_MAX_RATIO} to 1); it looks like a zip bomb and "
                "is refused.",
                "zip_bomb",
            )
