"""What a chat turn retrieves from its documents: the one entry point the inference side calls
(chat.grounding on the worker), so the ranking behind it can grow (full text today, full text
combined with embeddings when the operator sets an embedding model) without its callers
changing."""

from __future__ import annotations

from collections.abc import Iterable

from documents.selectors import Reader, SearchHit, passages_search


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
    return passages_search(
        user=user, question=question, documents=documents, collections=collections, limit=limit
    )
