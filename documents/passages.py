"""Cutting a document's text into passages for retrieval: windows of about PASSAGE_WORDS words
that overlap by OVERLAP_WORDS, so a sentence cut at one window's end is whole in the next. A
passage never spans two pages, so it keeps its page number.

Tokens are estimated as characters / 4 (about right for English with the common BPE
tokenizers): the exact count depends on the model that reads the passage, which is chosen only
when a prompt is sent, so stage 2 counts exactly, on the worker, what it puts in a prompt."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from documents.extraction import PageText

PASSAGE_WORDS = 200  # about 300 tokens of English
OVERLAP_WORDS = 40
CHARS_PER_TOKEN = 4
_WORD = re.compile(r"\S+")


def token_estimate(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


@dataclass(frozen=True)
class PassageText:
    page: int | None
    text: str

    @property
    def tokens(self) -> int:
        return token_estimate(self.text)


def passages_split(
    pages: Iterable[PageText], *, words: int = PASSAGE_WORDS, overlap: int = OVERLAP_WORDS
) -> Iterator[PassageText]:
    """Each page's text in overlapping windows of words; the text between the first and last
    word of a window is kept as it was (line breaks included)."""
    step = max(words - overlap, 1)
    for page in pages:
        spans = [m.span() for m in _WORD.finditer(page.text)]
        start = 0
        while start < len(spans):
            window = spans[start : start + words]
            yield PassageText(page.page, page.text[window[0][0] : window[-1][1]])
            if start + words >= len(spans):
                break
            start += step
