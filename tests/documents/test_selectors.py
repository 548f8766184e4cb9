"""Retrieval: ranking, access (owner, member of a shared group, outsider), narrowing to
documents and collections, and questions full of the full-text engines' syntax."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from documents.models import Collection, Document
from documents.selectors import (
    document_text,
    documents_readable_by,
    passages_search,
    search_terms,
)
from documents.services import collection_create, collection_share, document_upload
from tests.documents.conftest import index_here, pdf_bytes, upload

pytestmark = pytest.mark.django_db


def add(user: Any, collection: Collection, name: str, text: str) -> Document:
    document = document_upload(user=user, collection=collection, upload=upload(name, text.encode()))
    return index_here(document)


@pytest.fixture
def library(owner: Any, staff: Any, member: Any, shared_collection: Collection) -> dict[str, Any]:
    private = collection_create(user=owner, name="Alice's notes")
    return {
        "mine": add(owner, private, "mine.txt", "My bicycle lock code is kept in the drawer."),
        "shared": add(staff, shared_collection, "lab.txt", "The bicycle rack is behind lab B."),
        "private": private,
        "shared_collection": shared_collection,
    }


def names(hits: list[Any]) -> list[str]:
    return [h.document.name for h in hits]


def test_the_passage_holding_more_of_the_rare_words_ranks_first(owner: Any) -> None:
    collection = collection_create(user=owner, name="c")
    for i in range(5):
        add(owner, collection, f"filler{i}.txt", f"The freezer log for week {i} is complete.")
    add(owner, collection, "answer.txt", "The cryogenic freezer combination is 4471.")
    hits = passages_search(user=owner, question="What is the cryogenic freezer's combination?")
    assert names(hits)[0] == "answer.txt"
    assert len(hits) == 6  # "freezer" is in every one: they match, ranked lower
    assert hits[0].score > hits[1].score


def test_owner_member_and_outsider_each_find_only_what_they_may_read(
    owner: Any, staff: Any, member: Any, outsider: Any, library: dict[str, Any]
) -> None:
    assert sorted(names(passages_search(user=owner, question="bicycle"))) == ["mine.txt"]
    assert names(passages_search(user=member, question="bicycle")) == ["lab.txt"]
    assert names(passages_search(user=staff, question="bicycle")) == ["lab.txt"]
    assert passages_search(user=outsider, question="bicycle") == []
    collection_share(user=staff, collection=library["shared_collection"], everyone=True, groups=[])
    assert names(passages_search(user=outsider, question="bicycle")) == ["lab.txt"]
    assert sorted(names(passages_search(user=owner, question="bicycle"))) == [
        "lab.txt",
        "mine.txt",
    ]


def test_it_narrows_to_the_documents_and_collections_asked_for_within_access(
    owner: Any, outsider: Any, library: dict[str, Any]
) -> None:
    mine, private = library["mine"], library["private"]
    assert names(passages_search(user=owner, question="bicycle", documents=[mine.pk])) == [
        "mine.txt"
    ]
    assert names(passages_search(user=owner, question="bicycle", collections=[private.pk])) == [
        "mine.txt"
    ]
    # Asking by id for what one may not read finds nothing, as for a missing id.
    shared = library["shared"]
    assert passages_search(user=owner, question="bicycle", documents=[shared.pk]) == []
    assert passages_search(user=outsider, question="bicycle", collections=[private.pk]) == []
    assert passages_search(user=owner, question="bicycle", documents=[]) == []


def test_documents_not_ready_are_not_searched(owner: Any) -> None:
    collection = collection_create(user=owner, name="c")
    document = add(owner, collection, "a.txt", "walrus facts")
    Document.objects.filter(pk=document.pk).update(state="indexing")
    assert passages_search(user=owner, question="walrus") == []
    assert documents_readable_by(owner).count() == 1


HOSTILE = [
    '"',
    "'",
    '"unbalanced',
    "walrus AND NOT",
    "NEAR(walrus tusk)",
    "walrus*",
    "text:walrus",
    "^walrus",
    "-walrus",
    "(walrus",
    "walrus) OR (",
    "'; DROP TABLE documents_passage; --",
    "!!! ??? ...",
    "walrus & | ! <-> :*",
    "\\x00\x00walrus",
    "the of and",
    "",
    "a" * 5000,
]


@pytest.mark.parametrize("question", HOSTILE)
def test_questions_with_quotes_and_operators_never_raise(owner: Any, question: str) -> None:
    collection = collection_create(user=owner, name="c")
    add(owner, collection, "a.txt", "walrus tusk facts")
    hits = passages_search(user=owner, question=question)
    expect_walrus = "walrus" in search_terms(question)
    assert names(hits) == (["a.txt"] if expect_walrus else [])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(question=st.text(max_size=80))
def test_no_question_at_all_makes_the_search_raise(owner: Any, question: str) -> None:
    collection, _ = Collection.objects.get_or_create(owner=owner, name="h")
    if not collection.documents.exists():
        add(owner, collection, "a.txt", "walrus tusk facts")
    hits = passages_search(user=owner, question=question)
    words = {"walrus", "walruses", "tusk", "tusks", "fact", "facts"}
    assert names(hits) == (["a.txt"] if words & set(search_terms(question)) else [])


def test_a_documents_text_is_put_back_together_from_its_overlapping_passages(
    owner: Any,
) -> None:
    collection = collection_create(user=owner, name="Long")
    # 530 numbered words on one "page": four overlapping passages of a text file.
    text = "\n".join(" ".join(f"w{i * 10 + j}" for j in range(10)) for i in range(53))
    document = add(owner, collection, "long.txt", text)
    assert document.passages.count() == 4
    rebuilt = document_text(document=document)
    assert rebuilt.split() == text.split()
    pdf = document_upload(
        user=owner,
        collection=collection,
        upload=upload("two.pdf", pdf_bytes(["First page words.", "Second page words."])),
    )
    assert document_text(document=index_here(pdf)) == "First page words.\n\nSecond page words."
