"""What a chat turn retrieves from its documents: the one entry point the inference side calls
(chat.grounding on the worker), so the ranking behind it can change without its callers
changing.

Full text always (documents.selectors.passages_search); when the operator has set an embedding
model (WIZ_EMBEDDING_MODEL) and the passages have its vectors, the question is embedded too,
and the passages nearest it by cosine similarity are fused with the full-text ranking by
reciprocal rank fusion: a passage's score is the sum, over the two rankings it is in, of
1 / (RRF_K + its rank). So a passage that shares no word with the question can still be
found, and one that both rankings like comes first. In a process without llama.cpp (the web
process) the question is not embedded and the full text alone answers."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings

from documents.embeddings import document_embeddings_request, passages_nearest, question_vector
from documents.models import Passage
from documents.selectors import Reader, SearchHit, documents_searchable, passages_search

# The constant of reciprocal rank fusion (Cormack, Clarke and Büttcher, 2009): large enough
# that the first few places of one ranking do not outweigh agreement between the two.
RRF_K = 60
# How deep each ranking is read before fusing.
CANDIDATES = 50


def passages_for_question(
    *,
    user: Reader,
    question: str,
    documents: Iterable[int] | None = None,
    collections: Iterable[int] | None = None,
    limit: int = 8,
) -> list[SearchHit]:
    """The passages that best answer `question`, best first, among the ready documents `user`
    may read, narrowed to the attached documents and collections."""
    documents = None if documents is None else list(documents)
    collections = None if collections is None else list(collections)
    if limit < 1:
        return []
    text_hits = passages_search(
        user=user,
        question=question,
        documents=documents,
        collections=collections,
        limit=max(limit, CANDIDATES),
    )
    if not settings.WIZ_EMBEDDING_MODEL:
        return text_hits[:limit]
    readable = documents_searchable(user=user, documents=documents, collections=collections)
    # Documents not embedded yet by this model (indexed before it was set, or under another
    # model) are queued now; until their job has run, the full text finds them alone.
    document_embeddings_request(document_ids=readable.values("pk"))
    embedded = question_vector(question)
    if embedded is None:
        return text_hits[:limit]
    model_name, vector = embedded
    nearest = passages_nearest(
        readable=readable, model_name=model_name, vector=vector, limit=CANDIDATES
    )
    return rank_fuse(text_hits, nearest)[:limit]


def rank_fuse(text_hits: list[SearchHit], nearest: list[int]) -> list[SearchHit]:
    """The two rankings as one by reciprocal rank fusion, best first (ties: the better single
    rank, then the passage id)."""
    scores: dict[int, float] = {}
    best: dict[int, int] = {}
    for ranking in ([hit.passage.pk for hit in text_hits], nearest):
        for rank, pk in enumerate(ranking, start=1):
            scores[pk] = scores.get(pk, 0.0) + 1.0 / (RRF_K + rank)
            best[pk] = min(best.get(pk, rank), rank)
    passages = {hit.passage.pk: hit.passage for hit in text_hits}
    missing = [pk for pk in scores if pk not in passages]
    passages.update(Passage.objects.select_related("document").in_bulk(missing))
    order = sorted(scores, key=lambda pk: (-scores[pk], best[pk], pk))
    return [SearchHit(passages[pk], scores[pk]) for pk in order if pk in passages]
