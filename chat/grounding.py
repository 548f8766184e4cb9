"""What the model reads of a conversation's documents, on the inference worker: the turns of
an answer's branch with their sources put in, and those sources as the answer's citations.

`grounded_history(message, counter)` is a function of the saved rows and a token counter
(the loaded model's tokenizer, `EngineTokens`), so a test can call it with the real
tokenizer and see the very turns the worker sends. The layout, as docs/documents.md
("Sources in the prompt") describes it:

- every user turn on the branch may have attached documents and collections;
- attached documents (not collections) go in whole, in the turn that attached them, while
  their text together (counted exactly, with their headings) fits in half of the context left
  once the rest of the prompt and the room for the answer are counted; the turn reads the same
  in every later prompt, so the conversation's start stays cached across turns;
- the rest (documents that did not fit, and collections) is searched with the current turn's
  text (`documents.retrieval.passages_for_question`, as the conversation's owner), and the
  passages that fit a quarter of the context, best first, go in the current turn, with a short
  instruction to answer from the sources and cite them as [n].

Sources are numbered from 1: whole files first, in the order the branch attached them, then
the passages of this turn. Nothing the owner can no longer read (deleted, unshared since) or
that is not ready reaches the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from chat.attachments import Attachments
from chat.models import Message
from documents.models import Document, Passage
from documents.retrieval import passages_for_question
from documents.selectors import (
    SearchHit,
    collections_readable_by,
    document_text,
    documents_readable_by,
)

if TYPE_CHECKING:
    from inference.engine import BatchedEngine
    from inference.sampling import Sampling

# Passages asked of the search per turn: more than a quarter of a usual context holds, so the
# budget, not the search, decides how many go in.
RETRIEVE_LIMIT = 16
# A document whose estimated tokens (characters / 4) are this many times the room for whole
# files is not read back and counted: it cannot fit (the estimate is never that far off).
ESTIMATE_SLACK = 2
INSTRUCTION = (
    "Answer from the sources above and cite the ones you use as [n], with their numbers. "
    "If they do not hold the answer, say so."
)


class TokenCounter(Protocol):
    """The model's tokenizer and context, as grounding needs them."""

    @property
    def n_ctx(self) -> int: ...

    @property
    def answer_room(self) -> int: ...

    def text(self, text: str) -> int:
        """Tokens of a piece of text inside a prompt."""
        ...

    def turns(self, turns: list[dict[str, str]]) -> int:
        """Tokens of the whole prompt these turns make, chat template included."""
        ...

    def defuse(self, text: str) -> str:
        """Someone else's text with any spelling of a control token broken, so it stays text
        (inference.specials)."""
        ...


@dataclass(frozen=True)
class EngineTokens:
    """A loaded model's tokenizer and context window (on the worker)."""

    engine: BatchedEngine
    sampling: Sampling

    @property
    def n_ctx(self) -> int:
        return self.engine.n_ctx

    @property
    def answer_room(self) -> int:
        # What BatchedEngine.fit leaves for the answer.
        return min(self.sampling.max_tokens, self.engine.n_ctx // 4)

    def text(self, text: str) -> int:
        return len(self.engine.tokenize(text, add_bos=False))

    def defuse(self, text: str) -> str:
        return self.engine.specials.defuse(text)

    def turns(self, turns: list[dict[str, str]]) -> int:
        from inference.requests import GenerationRequest

        request = GenerationRequest(messages=turns, sampling=self.sampling)
        return len(self.engine.prompt_tokens(request))


@dataclass(frozen=True)
class Grounded:
    turns: list[dict[str, str]]
    citations: list[dict[str, Any]]


def _passage_block(number: int, document: Document, text: str, page: int | None) -> str:
    where = f", page {page}" if page is not None else ""
    return f"[{number}] {document.name}{where}:\n{text.strip()}"


def _whole_block(number: int, document: Document, text: str) -> str:
    return f"[{number}] {document.name} (whole file):\n{text.strip()}"


def _sources(blocks: list[str]) -> str:
    return "Sources:\n\n" + "\n\n".join(blocks)


def branch_chain(message: Message) -> list[Message]:
    """The messages this answer follows, oldest first, along its branch (as
    chat.generation.generation_history)."""
    by_id = {m.id: m for m in message.conversation.messages.all()}
    chain: list[Message] = []
    current = by_id.get(message.parent_id) if message.parent_id else None
    while current is not None:
        if current.role == Message.Role.USER or current.content:
            chain.append(current)
        current = by_id.get(current.parent_id) if current.parent_id else None
    chain.reverse()
    return chain


def history_turns(message: Message, chain: list[Message]) -> list[dict[str, str]]:
    # A thinking model's thoughts go along as `reasoning_content`; the engine drops them unless
    # the model's template reads them (most leave earlier thinking out on purpose).
    turns = [
        {"role": m.role, "content": m.content, "reasoning_content": m.reasoning}
        if m.reasoning
        else {"role": m.role, "content": m.content}
        for m in chain
    ]
    system_prompt = message.options.get("system_prompt")
    if system_prompt:
        turns.insert(0, {"role": "system", "content": system_prompt})
    return turns


def grounded_history(message: Message, counter: TokenCounter) -> Grounded:
    """The turns the model reads for this answer, with their sources, and the citations."""
    chain = branch_chain(message)
    turns = history_turns(message, chain)
    offset = len(turns) - len(chain)  # the system prompt, when there is one
    attached = [(i, Attachments.of(m)) for i, m in enumerate(chain) if m.role == "user"]
    if not any(a for _, a in attached):
        return Grounded(turns, [])
    owner = message.conversation.owner
    document_ids = list(dict.fromkeys(d for _, a in attached for d in a.documents))
    collection_ids = list(dict.fromkeys(c for _, a in attached for c in a.collections))
    readable = documents_readable_by(owner).filter(state=Document.State.READY).in_bulk(document_ids)
    collections = list(
        collections_readable_by(owner).filter(pk__in=collection_ids).values_list("pk", flat=True)
    )
    current = max(i for i, _ in attached)

    left = counter.n_ctx - counter.answer_room - counter.turns(turns)
    sources = _Sources(counter)
    sources.add_whole_files(attached, readable, room=max(left, 0) // 2)
    if sources.searched or collections:
        room = min(counter.n_ctx // 4, max(left - sources.whole_tokens, counter.n_ctx // 8))
        hits = passages_for_question(
            user=owner,
            question=chain[current].content,
            documents=sources.searched,
            collections=collections,
            limit=RETRIEVE_LIMIT,
        )
        sources.add_passages(hits, room=room)

    for index, blocks in sources.whole_of.items():
        if index != current:
            turn = turns[offset + index]
            turn["content"] = _sources(blocks) + "\n\n" + turn["content"]
    if sources.citations:
        here = sources.whole_of.get(current, []) + sources.passages
        turn = turns[offset + current]
        parts = [_sources(here)] if here else []
        turn["content"] = "\n\n".join([*parts, INSTRUCTION, turn["content"]])
    return Grounded(turns, sources.citations)


class _Sources:
    """The sources of one prompt as they are chosen, numbered in that order."""

    def __init__(self, counter: TokenCounter) -> None:
        self.counter = counter
        self.citations: list[dict[str, Any]] = []
        self.whole_of: dict[int, list[str]] = {}  # a turn's index → the whole files it attached
        self.whole_tokens = 0
        self.searched: list[int] = []  # attached documents that did not go in whole
        self.passages: list[str] = []

    def add_whole_files(
        self, attached: list[tuple[int, Attachments]], readable: dict[int, Document], room: int
    ) -> None:
        seen: set[int] = set()
        for index, attachments in attached:
            for document_id in attachments.documents:
                document = readable.get(document_id)
                if document is None or document_id in seen:
                    continue
                seen.add(document_id)
                if document.tokens > ESTIMATE_SLACK * (room - self.whole_tokens):
                    self.searched.append(document_id)
                    continue
                text = document_text(document=document)
                # A file is someone else's text (a shared collection's, a name): it must not
                # spell the template's control tokens (inference.specials).
                block = self.counter.defuse(_whole_block(len(self.citations) + 1, document, text))
                tokens = self.counter.text(block) + 2  # and the blank line between blocks
                if self.whole_tokens + tokens > room:
                    self.searched.append(document_id)
                    continue
                self.whole_tokens += tokens
                self.whole_of.setdefault(index, []).append(block)
                self.citations.append(_citation(len(self.citations) + 1, document, text))

    def add_passages(self, hits: list[SearchHit], room: int) -> None:
        """The hits that fit `room` tokens with the heading and the instruction, best first; one
        that does not fit is skipped for the next."""
        spent = self.counter.text(_sources([]) + "\n\n" + INSTRUCTION + "\n\n")
        for hit in hits:
            number = len(self.citations) + 1
            passage = hit.passage
            block = self.counter.defuse(
                _passage_block(number, hit.document, passage.text, passage.page)
            )
            tokens = self.counter.text(block) + 2
            if spent + tokens > room:
                continue
            spent += tokens
            self.passages.append(block)
            self.citations.append(_citation(number, hit.document, passage.text, passage=passage))


# What a citation keeps of a whole file's text: enough to show, not a copy of the file.
CITED_WHOLE_CHARS = 2000


def _citation(
    number: int, document: Document, text: str, *, passage: Passage | None = None
) -> dict[str, Any]:
    """A source as the answer keeps it: a passage, or (without one) a whole file."""
    return {
        "n": number,
        "document": document.pk,
        "name": document.name,
        "page": passage.page if passage else None,
        "passage": passage.pk if passage else None,
        "text": text if passage else text[:CITED_WHOLE_CHARS],
        "whole": passage is None,
    }
