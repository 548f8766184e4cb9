"""Running one generation on an inference worker: the assistant message's row goes queued →
running → done / aborted / failed, and its text streams to the browser meanwhile."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import redis
from django.db import InterfaceError, OperationalError, close_old_connections

from chat.frames import broadcast
from chat.grammar import GrammarError
from chat.grounding import EngineTokens, Grounded, branch_chain, grounded_history, history_turns
from chat.models import Message
from chat.options import GenerationOptions
from chat.queue import queue_position_frames
from chat.streams import AbortWatcher, MessageStream
from chat.titles import title_request
from chat.tools import call_request, decision_request, tool_calls_from
from inference.presence import PRIORITIES
from inference.requests import (
    Finished,
    GenerationRequest,
    GrammarRefused,
    PromptProgress,
    PromptTooLong,
    ReasoningRefused,
    TextDelta,
)
from inference.runtime import ModelLoadError, runtime
from models_admin.loading import model_spec
from wizweb.channels_sender import ChannelSender

if TYPE_CHECKING:
    from inference.engine import BatchedEngine

log = logging.getLogger(__name__)

# How long the end of an answer waits for the database (see _save_end), and how often it tries.
SAVE_PATIENCE = 120.0
SAVE_RETRY_EVERY = 1.0


def generation_history(message: Message) -> list[dict[str, str]]:
    """The turns this answer follows, oldest first, along its branch (parent links), without
    their documents (chat.grounding puts those in)."""
    return history_turns(message, branch_chain(message))


def _timings(message: Message, finished: Finished) -> dict[str, Any]:
    assert message.started_at is not None
    queue_ms = (message.started_at - message.created_at).total_seconds() * 1000
    timings = {
        "queue_ms": round(queue_ms, 1),
        "ttft_ms": round(finished.prompt_ms, 1),
        "total_ms": round(finished.prompt_ms + finished.generation_ms, 1),
        "tokens_per_s": round(finished.tokens_per_s, 2),
    }
    if finished.reasoning_tokens:  # only an answer that thought has a thinking time
        timings["reasoning_ms"] = round(finished.reasoning_ms, 1)
    return timings


def _run_pass(
    engine: BatchedEngine,
    request: GenerationRequest,
    *,
    connection: redis.Redis,
    message: Message,
    on_text: Callable[[str, str], None] | None = None,
    on_progress: Callable[[PromptProgress], None] | None = None,
) -> Finished:
    """One pass over the model, decoded with every other answer of the worker; abortable by
    the user and by rq's stop-job command (the generation's tag is the job's id)."""
    generation = engine.submit(
        request,
        tier=PRIORITIES.index(message.priority),
        owner=str(message.conversation.owner_id),
        tag=str(message.id),
    )
    finished = None
    with AbortWatcher(connection=connection, message_id=message.id, on_abort=generation.abort):
        for event in generation.events():
            if isinstance(event, TextDelta):
                if on_text is not None:
                    on_text(event.text, event.channel)
            elif isinstance(event, PromptProgress):
                if on_progress is not None:
                    on_progress(event)
            else:
                finished = event
    assert finished is not None
    return finished


def _answer(
    engine: BatchedEngine,
    message: Message,
    options: GenerationOptions,
    *,
    history: list[dict[str, str]],
    connection: redis.Redis,
    on_text: Callable[[str, str], None],
    on_progress: Callable[[PromptProgress], None],
) -> tuple[Finished, list[dict[str, Any]]]:
    """The answer, or the tool calls (see chat.tools), with the tokens of every pass counted.
    Every pass reports the reading of a long prompt: the first pass is the one that reads it."""
    run = partial(
        _run_pass, engine, connection=connection, message=message, on_progress=on_progress
    )
    if message.mode == Message.Mode.COMPLETION:
        # /v1/completions: the prompt as it is, no chat template and no tools.
        assert message.parent is not None
        request = GenerationRequest(prompt=message.parent.content, sampling=options.sampling)
        return run(request, on_text=on_text), []
    plan = options.tools
    spent: Finished | None = None
    if plan is not None and plan.needs_decision:
        spent = run(decision_request(history, plan))
        if spent.finish_reason == "aborted":
            return spent, []
        if spent.content != "yes":
            plan = None
    if plan is None:
        finished = run(
            GenerationRequest(messages=history, sampling=options.sampling), on_text=on_text
        )
        calls: list[dict[str, Any]] = []
    else:
        # A thinking model may think before it calls: its thoughts stream as reasoning, and
        # the calls are parsed from the content alone (the splitter took the block off).
        finished = run(
            call_request(history, plan, options.sampling, engine.thinking),
            on_text=lambda text, channel: (
                on_text(text, channel) if channel == "reasoning" else None
            ),
        )
        calls = tool_calls_from(finished.content) if finished.finish_reason == "stop" else []
        if calls:
            finished = replace(finished, content="", finish_reason="tool_calls")
    if spent is not None:
        finished = replace(
            finished,
            prompt_tokens=finished.prompt_tokens + spent.prompt_tokens,
            completion_tokens=finished.completion_tokens + spent.completion_tokens,
            prompt_ms=finished.prompt_ms + spent.prompt_ms + spent.generation_ms,
        )
    return finished, calls


def generation_run(
    *,
    message_id: uuid.UUID | str,
    options: GenerationOptions,
    sender: ChannelSender,
    connection: redis.Redis,
    worker_name: str,
    worker_run: str,
) -> None:
    message = (
        Message.objects.select_related("conversation", "model", "parent")
        .filter(pk=message_id)
        .first()
    )
    if message is None or not message.start(worker=worker_name, run=worker_run):
        return  # deleted or aborted while it waited in the queue
    stream = MessageStream(sender=sender, connection=connection, message_id=message.id)
    stream.started(model=message.model_name, worker=worker_name)
    broadcast(queue_position_frames(), sender=sender)

    parts: dict[str, list[str]] = {"content": [], "reasoning": []}

    def on_text(text: str, channel: str) -> None:
        parts[channel].append(text)
        stream.text(text, channel)

    finished: Finished | None = None
    tool_calls: list[dict[str, Any]] = []
    grounded = Grounded([], [])
    error = ""
    try:
        if message.model is None:
            raise ModelLoadError("The model of this conversation was deleted; pick another one.")
        with runtime.lease(model_spec(message.model)) as engine:
            if message.mode == Message.Mode.CHAT:
                grounded = grounded_history(message, EngineTokens(engine, options.sampling))
                if grounded.citations:
                    # Saved now too, so that an answer the reaper fails (its worker died)
                    # still says what it was given.
                    Message.objects.filter(pk=message.pk).update(citations=grounded.citations)
            finished, tool_calls = _answer(
                engine,
                message,
                options,
                history=grounded.turns,
                connection=connection,
                on_text=on_text,
                on_progress=lambda read: stream.progress(done=read.done, total=read.total),
            )
    except (PromptTooLong, ModelLoadError, GrammarError, GrammarRefused, ReasoningRefused) as exc:
        error = str(exc)
    except Exception as exc:
        log.exception("Generation of message %s failed", message.id)
        error = f"The generation failed on worker {worker_name}: {exc}. Try again."

    # Every chunk is in the log before the row says finished (see chat.streams.message_backlog).
    stream.flush()
    if finished is not None:
        ending: dict[str, Any] = {
            "state": Message.State.ABORTED
            if finished.finish_reason == "aborted"
            else Message.State.DONE,
            "content": finished.content,
            "finish_reason": finished.finish_reason,
            "prompt_tokens": finished.prompt_tokens,
            "completion_tokens": finished.completion_tokens,
            "cached_tokens": finished.cached_tokens,
            "trimmed": asdict(finished.trimmed) if finished.trimmed else None,
            "tool_calls": tool_calls,
            "timings": _timings(message, finished),
            "reasoning": finished.reasoning,
            "reasoning_tokens": finished.reasoning_tokens,
            "note": finished.note,
            "citations": grounded.citations,
        }
    else:
        ending = {
            "state": Message.State.FAILED,
            "content": "".join(parts["content"]),
            "reasoning": "".join(parts["reasoning"]),
            "finish_reason": "error",
            "error": error,
            "citations": grounded.citations,
        }
    if not _save_end(message, ending):
        # Its conversation was deleted while it was written (the deletion aborted it first).
        # Nothing is left to save, but the log, the abort key and any follower are still ours.
        log.info("Message %s was deleted while it was written; its answer is dropped", message.id)
    else:
        _title_ask(message)
    stream.finished(message.done_frame())


def _title_ask(message: Message) -> None:
    """A conversation's first answer is done: queue its title (chat.titles). A title is not
    worth failing an answer for, so nothing here reaches the reader."""
    try:
        title_request(message=message)
    except Exception:
        log.warning("Could not ask for a title after message %s", message.id, exc_info=True)


def _save_end(message: Message, ending: dict[str, Any]) -> bool:
    """Save the end of an answer and touch its conversation; False when the row is gone.

    A database that is briefly away (SQLite locked past its timeout, PostgreSQL restarting) is
    waited for, up to SAVE_PATIENCE seconds: a whole answer is worth it. Past that the error
    stands, and the reaper fails the answer from its chunk log once the database is back."""
    deadline = time.monotonic() + SAVE_PATIENCE
    while True:
        try:
            saved = message.finish(**ending)
            if saved:
                message.conversation.touch()
            return saved
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("Could not save the end of message %s (%s); trying again", message.id, exc)
            close_old_connections()  # a connection the database dropped is opened again
            time.sleep(SAVE_RETRY_EVERY)
