"""Titles written by the model. A new conversation is named by the first words of its first
prompt, so its answer never waits for a title; once that first answer is done, the model is
asked for a short title as background work: on the background queue, after every waiting
answer of every tier, and at the scheduler's background tier, paused for any answer that finds
the slots full. The title is cleaned here and saved unless the user renamed the conversation
meanwhile; every open page of the user hears it as a `conversation` frame. Anything that goes
wrong leaves the first words in place, quietly: a title is not worth an error.

Titles are not answers: they are not counted in the user's usage or quotas (`usage`), since
the user did not ask for them and an operator can turn them off (`WIZ_MODEL_TITLES`).
"""

from __future__ import annotations

import logging
import re
import unicodedata
import uuid

from django.conf import settings
from django.db import transaction
from rq import Queue

from chat.frames import broadcast, conversation_frame, user_group
from chat.models import Conversation, Message
from chat.queue import queues_model
from inference.presence import BACKGROUND_TIER, background_queue_name
from inference.requests import Finished, GenerationRequest
from inference.runtime import runtime
from inference.sampling import Sampling
from models_admin.loading import model_spec
from wizweb.channels_sender import ChannelSender
from wizweb.redis_server import redis_connection

log = logging.getLogger(__name__)

# Small models overshoot whatever length they are asked for, and a title cut at six words
# mostly ends mid-phrase ("Why the Sea Has Two High"); eight, less a dangling little word,
# mostly reads whole.
TITLE_WORDS = 8
TITLE_CHARS = 60  # as long as the first words' title (chat.submission.TITLE_LENGTH)
# Of the first prompt, what the model reads to name the conversation: enough to know what it
# is about, little to read for background work. (With the answer too, the default model wrote
# the answer's first sentence again rather than a title.)
SOURCE_CHARS = 1500
# Greedy and seeded, so a conversation gets the same title however often it is asked; the
# answer starts with "Title:", which makes a small model write one instead of answering.
TITLE_SAMPLING = Sampling(
    temperature=0.0, seed=0, max_tokens=24, repeat_penalty=1.0, response_prefix="Title:"
)
# The owner the scheduler and the worker see: titles are nobody's, so they never count against
# a person's share of the slots.
TITLE_OWNER = "titles"
TITLE_INSTRUCTION = (
    "Write a short title, at most six words, for a conversation that starts with this question:"
)
# Little words a cut title must not end on.
_DANGLING = {"a", "an", "and", "at", "for", "from", "in", "of", "on", "or", "the", "to", "with"}
# What models put before or around a title, to be cut off.
_LABEL = re.compile(r"^(?:the\s+)?title\s*(?:is)?\s*[:\uff1a\-\u2013\u2014]\s*", re.IGNORECASE)


def title_job_id(conversation_id: uuid.UUID | str) -> str:
    return f"title-{uuid.UUID(str(conversation_id)).hex}"


def _strip_ends(text: str) -> str:
    """Without punctuation, symbols or spaces at either end (quotes, a full stop, `**`, `#`)."""
    start, end = 0, len(text)
    while start < end and unicodedata.category(text[start])[0] in "PSZC":
        start += 1
    while end > start and unicodedata.category(text[end - 1])[0] in "PSZC":
        end -= 1
    return text[start:end]


def title_clean(text: str) -> str:
    """The title in what the model wrote: its first line, without a "Title:" label, quotes or
    punctuation at the ends, the part before a colon when that is a title of its own ("The
    Moon's Composition: A Tale of Two Worlds"), at most TITLE_WORDS words and TITLE_CHARS
    characters, cut at a word and not after a little word like "of"; "" when nothing is left."""
    line = next((line for line in text.splitlines() if _strip_ends(_LABEL.sub("", line))), "")
    line = _strip_ends(_LABEL.sub("", _strip_ends(line)))
    head, colon, _ = line.partition(":")
    if colon and len(head.split()) >= 2:
        line = _strip_ends(head)
    words = line.split()
    cut = len(words) > TITLE_WORDS
    words = words[:TITLE_WORDS]
    while len(words) > 1 and len(" ".join(words)) > TITLE_CHARS:
        words.pop()
        cut = True
    while cut and len(words) > 1 and _strip_ends(words[-1]).lower() in _DANGLING:
        words.pop()
    return _strip_ends(" ".join(words)[:TITLE_CHARS])


def title_wanted(message: Message) -> bool:
    """Whether this finished answer is the first of a conversation that needs a model's title:
    the switch is on, the answer is done and has text, its conversation is listed and was not
    renamed, and no earlier answer of it was done (a regenerated first answer asks nothing)."""
    if not settings.WIZ_MODEL_TITLES:
        return False
    if message.state != Message.State.DONE or not message.content.strip():
        return False
    if message.mode != Message.Mode.CHAT:
        return False
    waiting = Conversation.objects.filter(
        pk=message.conversation_id, in_history=True, title_by_user=False
    ).exists()
    if not waiting:
        return False
    done = Message.objects.filter(
        conversation_id=message.conversation_id,
        role=Message.Role.ASSISTANT,
        state=Message.State.DONE,
    )
    return done.count() == 1


def title_request(*, message: Message) -> None:
    """After an answer is saved: queue the conversation's title job if it wants one."""
    if not title_wanted(message):
        return
    conversation_id = str(message.conversation_id)

    def enqueue() -> None:
        connection = redis_connection()
        name = background_queue_name(queues_model(connection, message.model_id))
        Queue(name, connection=connection).enqueue(
            "chat.jobs.conversation_title_write",
            conversation_id,
            job_id=title_job_id(conversation_id),
            job_timeout=settings.WIZ_GENERATION_TIMEOUT,
            meta={"owner": TITLE_OWNER},
            result_ttl=600,
            failure_ttl=86400,
        )

    transaction.on_commit(enqueue)


def _title_messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{TITLE_INSTRUCTION}\n\n{prompt[:SOURCE_CHARS]}"}]


def title_write(*, conversation_id: uuid.UUID | str, sender: ChannelSender) -> str:
    """Have the model title a conversation after its first answer (on an inference worker),
    save the title unless the user renamed it meanwhile, and tell the user's pages. The title,
    or "" when none was written: the conversation is gone or renamed, its model is not loaded
    on this worker (a background job must not cost anyone a load), or nothing usable came."""
    conversation = Conversation.objects.filter(pk=conversation_id, title_by_user=False).first()
    if conversation is None:
        return ""
    answer = (
        Message.objects.select_related("model", "parent")
        .filter(conversation=conversation, role=Message.Role.ASSISTANT, state=Message.State.DONE)
        .order_by("created_at")
        .first()
    )
    if answer is None or answer.model is None or answer.parent is None:
        return ""
    spec = model_spec(answer.model)
    if not runtime.holds(spec):
        log.info("No title for %s: its model is not loaded here", conversation.pk)
        return ""
    request = GenerationRequest(
        messages=_title_messages(answer.parent.content), sampling=TITLE_SAMPLING
    )
    finished = None
    with runtime.lease(spec) as engine:
        generation = engine.submit(
            request, tier=BACKGROUND_TIER, owner=TITLE_OWNER, tag=title_job_id(conversation.pk)
        )
        for event in generation.events():
            if isinstance(event, Finished):
                finished = event
    if finished is None or finished.finish_reason not in ("stop", "length"):
        return ""
    title = title_clean(finished.content)
    if not title:
        return ""
    saved = Conversation.objects.filter(pk=conversation.pk, title_by_user=False).update(title=title)
    if not saved:
        return ""  # renamed (or deleted) while the model wrote
    named = conversation_frame(conversation.pk, title)
    broadcast([(user_group(conversation.owner_id), named)], sender=sender)
    sender.flush()
    return title
