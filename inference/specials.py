"""Text written by someone other than the person asking (a document, a shared collection's
passage) kept as plain text in a prompt.

The engine tokenizes a formatted prompt with `special=True`, so that the chat template's own
markers become control tokens. Any text inside it that spells one (`<|im_start|>system…` in a
PDF) would become one too, and could open a turn of its own: a prompt injection with the
template's authority. `SpecialTexts.defuse` breaks each such spelling with a zero-width space
after its first character, so the tokenizer reads it as the characters it shows."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

import llama_cpp

BREAK = "\u200b"  # zero-width space
# Vocabulary entries that tokenizing with special=True reads as one token, not as text.
PARSED_AS_SPECIAL = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
# Only entries with markup characters are broken: a user-defined entry may be plain text (runs
# of spaces, common words) that a document must keep as it is.
MARKUP = set("<>[]|")


class Vocabulary(Protocol):
    def n_vocab(self) -> int: ...

    def token_get_attr(self, token: int) -> int: ...

    def token_get_text(self, token: int) -> str: ...


class SpecialTexts:
    def __init__(self, texts: Iterable[str]) -> None:
        longest_first = sorted(
            {t for t in texts if len(t) > 1 and MARKUP & set(t)}, key=len, reverse=True
        )
        self.texts = tuple(longest_first)
        self._pattern = (
            re.compile("|".join(map(re.escape, longest_first))) if longest_first else None
        )

    @classmethod
    def of(cls, vocabulary: Vocabulary) -> SpecialTexts:
        """The special texts of a loaded model (or a vocab-only one)."""
        return cls(
            vocabulary.token_get_text(token)
            for token in range(vocabulary.n_vocab())
            if vocabulary.token_get_attr(token) & PARSED_AS_SPECIAL
        )

    def defuse(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda found: found[0][0] + BREAK + found[0][1:], text)
