"""Reads of the documents app: who may read which collections and documents, and retrieval
(`passages_search`), the one place that knows how each database ranks text.

Access: a collection is readable by its owner, and by everyone or the members of its groups
when it is shared; a document by its owner and by whoever may read its collection. Nothing
else, staff included: a file is its owner's unless shared. What a user may not read does not
exist for them (404)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db import connection
from django.db.models import F, Q, QuerySet, Sum
from django.http import Http404

from documents.models import Collection, Document, Passage
from documents.passages import OVERLAP_WORDS

Reader = AbstractBaseUser | AnonymousUser
SEARCH_LIMIT = 8
MAX_TERMS = 32
_TERM = re.compile(r"\w+", re.UNICODE)
_WORD = re.compile(r"\S+")
# Words that match nearly every passage: they only slow the search and blur the ranking.
# (PostgreSQL's english configuration drops its own list; FTS5 has none.)
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    out over own same she should so some such than that the their theirs them then there these
    they this those through to too under until up very was we were what when where which while
    who whom why will with would you your yours""".split()  # noqa: SIM905 - a list of words
)


def collections_readable_by(user: Reader) -> QuerySet[Collection]:
    if not user.is_authenticated:
        return Collection.objects.none()
    shared = Q(shared_with_everyone=True) | Q(shared_groups__user=user.pk)
    # A subquery, so a member of two of its groups gets a collection once.
    visible = Collection.objects.filter(Q(owner=user.pk) | shared).values("pk")
    return Collection.objects.filter(pk__in=visible)


def documents_readable_by(user: Reader) -> QuerySet[Document]:
    if not user.is_authenticated:
        return Document.objects.none()
    return Document.objects.filter(
        Q(owner=user.pk) | Q(collection__in=collections_readable_by(user).values("pk"))
    )


def collection_get(*, user: Reader, collection_id: int) -> Collection:
    """A collection the user may read, or 404."""
    collection = collections_readable_by(user).filter(pk=collection_id).first()
    if collection is None:
        raise Http404("No such collection.")
    return collection


def document_get(*, user: Reader, document_id: int) -> Document:
    """A document the user may read, or 404."""
    document = documents_readable_by(user).select_related("owner").filter(pk=document_id).first()
    if document is None:
        raise Http404("No such document.")
    return document


def collection_documents(*, collection: Collection) -> QuerySet[Document]:
    return collection.documents.select_related("owner").order_by("name", "pk")


def loose_documents(*, user: Reader) -> QuerySet[Document]:
    """The user's own files in no collection (attached to chat turns), newest first."""
    return Document.objects.filter(owner=user.pk, collection=None).select_related("owner")


def documents_bytes_of(*, user: Reader) -> int:
    """What the user's stored files add up to, for the per-user limit."""
    total = Document.objects.filter(owner=user.pk).aggregate(total=Sum("size_bytes"))["total"]
    return int(total or 0)


@dataclass(frozen=True)
class SearchHit:
    passage: Passage
    score: float  # higher is better; comparable only within one search

    @property
    def document(self) -> Document:
        return self.passage.document


def search_terms(question: str) -> list[str]:
    """The question's words, lower-cased, without stop words or repeats: only letters, digits
    and underscores survive, so no quote, operator or bracket reaches the database's parser."""
    terms: list[str] = []
    for word in _TERM.findall(question.lower()):
        if word not in STOP_WORDS and word not in terms:
            terms.append(word)
    return terms[:MAX_TERMS]


def documents_searchable(
    *,
    user: Reader,
    documents: Iterable[int] | None = None,
    collections: Iterable[int] | None = None,
) -> QuerySet[Document]:
    """What a search looks in: the ready documents the user may read, narrowed to the given
    document and collection ids when given (both: either; both empty: nothing). The one place
    retrieval's access rule is written, for the full text and the embeddings alike."""
    readable = documents_readable_by(user).filter(state=Document.State.READY)
    if documents is not None or collections is not None:
        document_ids, collection_ids = list(documents or []), list(collections or [])
        if not document_ids and not collection_ids:
            return Document.objects.none()  # narrowed to nothing
        wanted = Q(pk__in=document_ids) | Q(collection__in=collection_ids)
        readable = readable.filter(wanted)
    return readable


def passages_search(
    *,
    user: Reader,
    question: str,
    documents: Iterable[int] | None = None,
    collections: Iterable[int] | None = None,
    limit: int = SEARCH_LIMIT,
) -> list[SearchHit]:
    """The passages that best match `question`, best first, among the ready documents the user
    may read, narrowed to the given document and collection ids when given (both: either).

    SQLite ranks with FTS5's BM25, PostgreSQL with `ts_rank` over an english tsvector; a
    passage matches when it holds any of the question's words (stemmed), and holding more of
    the rarer ones ranks it higher. A question of only punctuation or stop words finds nothing.
    Stage 2 calls this for each turn with the conversation's attachments and collections."""
    terms = search_terms(question)
    if not terms or limit < 1:
        return []
    readable = documents_searchable(user=user, documents=documents, collections=collections)
    if connection.vendor == "postgresql":
        candidates = Passage.objects.filter(document__in=readable.values("pk"))
        return _search_postgresql(candidates, terms, limit)
    return _search_sqlite(readable, terms, limit)


def _search_postgresql(
    candidates: QuerySet[Passage], terms: list[str], limit: int
) -> list[SearchHit]:
    # Each term quoted as a lexeme and joined with OR; to_tsquery stems them as the index did.
    query = SearchQuery(" | ".join(f"'{t}'" for t in terms), search_type="raw", config="english")
    ranked = (
        candidates.filter(search_vector=query)
        .annotate(score=SearchRank(F("search_vector"), query))
        .select_related("document")
        .order_by("-score", "document_id", "ordinal")[:limit]
    )
    return [SearchHit(p, float(p.score)) for p in ranked]


def _search_sqlite(readable: QuerySet[Document], terms: list[str], limit: int) -> list[SearchHit]:
    # Each term a quoted FTS5 string (it holds only word characters), joined with OR.
    match = " OR ".join(f'"{t}"' for t in terms)
    # The readable documents' ids first, then one join: with the access subquery inside the
    # FTS query SQLite ran it per matching row (65 ms against 1 ms for 900 passages).
    document_ids = list(readable.values_list("pk", flat=True))
    if not document_ids:
        return []
    sql = (
        "SELECT f.rowid, bm25(documents_passage_fts) FROM documents_passage_fts f "
        "JOIN documents_passage p ON p.id = f.rowid "
        "WHERE documents_passage_fts MATCH %s "
        "AND p.document_id IN (SELECT value FROM json_each(%s)) "
        "ORDER BY 2, f.rowid LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [match, json.dumps(document_ids), limit])
        ranked = cursor.fetchall()
    # BM25 is lower for a better match in FTS5; turned around so that higher is better.
    passages = Passage.objects.select_related("document").in_bulk([pk for pk, _ in ranked])
    return [SearchHit(passages[pk], -float(score)) for pk, score in ranked if pk in passages]


def document_text(*, document: Document) -> str:
    """A document's whole text, put back together from its passages: within a page each
    passage after the first repeats the last OVERLAP_WORDS words of the one before (see
    documents.passages), which are left out; pages are joined by a blank line. The spaces
    where two passages meet become one space."""
    pages: list[str] = []
    current_page: object = object()
    for page, text in document.passages.order_by("ordinal").values_list("page", "text"):
        if page != current_page or not pages:
            pages.append(text)
            current_page = page
            continue
        words = list(_WORD.finditer(text))
        if len(words) > OVERLAP_WORDS:
            pages[-1] += " " + text[words[OVERLAP_WORDS].start() :]
    return "\n\n".join(pages)
