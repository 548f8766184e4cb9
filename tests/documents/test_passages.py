"""Cutting text into overlapping passages that keep their page."""

from __future__ import annotations

from documents.extraction import PageText
from documents.passages import passages_split, token_estimate


def test_it_cuts_each_page_into_overlapping_windows_that_keep_the_page() -> None:
    words = [f"w{i}" for i in range(500)]
    pages = [PageText(1, "short page"), PageText(2, " ".join(words))]
    passages = list(passages_split(pages, words=200, overlap=40))
    assert passages[0].page == 1 and passages[0].text == "short page"
    second_page = [p for p in passages if p.page == 2]
    assert [p.text.split()[0] for p in second_page] == ["w0", "w160", "w320"]
    assert second_page[0].text.split()[-40:] == second_page[1].text.split()[:40]
    assert second_page[-1].text.split()[-1] == "w499"
    every_word = {w for p in second_page for w in p.text.split()}
    assert every_word == set(words)


def test_it_keeps_line_breaks_inside_a_passage_and_skips_empty_pages() -> None:
    passages = list(passages_split([PageText(None, "a\nb\n\nc"), PageText(3, "   \n ")]))
    assert [(p.page, p.text) for p in passages] == [(None, "a\nb\n\nc")]


def test_tokens_are_estimated_from_characters() -> None:
    assert token_estimate("") == 0
    assert token_estimate("abcd") == 1
    assert token_estimate("abcde") == 2
