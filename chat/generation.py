"""Running one generation on an inference worker: the assistant message's row goes queued →
running → done / aborted / failed, and its text streams to the browser meanwhile."""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict
from typing import Any

import redis

from chat.engine import (
    Finished,
    Generation,
    GenerationRequest,
    PromptTooLong,
    Sampling,
    TextDelta,
)
from chat.models import Message
from chat.services import queue_position_frames
from chat.streams import AbortWatcher, MessageStream
from models_admin.runtime import ModelLoadError, runtime
from wizweb.channels_sender import ChannelSender

log = logging.getLogger(__name__)

# The generation this process runs now, so that rq's stop-job command can abort it.
current_generation: Generation | None = None


def generation_abort_current() -> bool:
    generation = current_generation
    if generation is None:
        return False
    generation.abort()
    return True


def generation_history(message: Message) -> list[dict[str, str]]:
    """The turns this answer follows, oldest first, along its branch (parent links)."""
    by_id = {m.id: m for m in message.conversation.messages.all()}
    chain: list[Message] = []
    current = by_id.get(message.parent_id) if message.parent_id else None
    while current is not None:
        if current.role == Message.Role.USER or current.content:
            chain.append(current)
        current = by_id.get(current.parent_id) if current.parent_id else None
    chain.reverse()
    turns = [{"role": m.role, "content": m.content} for m in chain]
    system_prompt = message.options.get("system_prompt")
    if system_prompt:
        turns.insert(0, {"role": "system", "content": system_prompt})
    return turns


def generation_request_for(message: Message, sampling: Sampling) -> GenerationRequest:
    return GenerationRequest(messages=generation_history(message), sampling=sampling)


def _timings(message: Message, finished: Finished) -> dict[str, Any]:
    assert message.started_at is not None
    queue_ms = (message.started_at - message.created_at).total_seconds() * 1000
    return {
        "queue_ms": round(queue_ms, 1),
        "ttft_ms": round(finished.prompt_ms, 1),
        "total_ms": round(finished.prompt_ms + finished.generation_ms, 1),
        "tokens_per_s": round(finished.tokens_per_s, 2),
    }


def generation_run(
    *,
    message_id: uuid.UUID | str,
    sampling: Sampling,
    sender: ChannelSender,
    connection: redis.Redis,
    worker_name: str,
) -> None:
    global current_generation
    message = Message.objects.select_related("conversation", "model").get(pk=message_id)
    if not message.start(worker=worker_name):
        return  # aborted while it waited in the queue
    stream = MessageStream(sender=sender, connection=connection, message_id=message.id)
    stream.started(model=message.model_name, worker=worker_name)
    for group, frame in queue_position_frames():
        sender.send(group, {"type": "chat.frame", "frame": frame})

    parts: list[str] = []
    finished: Finished | None = None
    error = ""
    try:
        if message.model is None:
            raise ModelLoadError("The model of this conversation was deleted; pick another one.")
        engine = runtime.engine_for(message.model)
        generation = engine.submit(generation_request_for(message, sampling))
        current_generation = generation
        with AbortWatcher(connection=connection, message_id=message.id, on_abort=generation.abort):
            for event in generation.events():
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                    stream.text(event.text)
                else:
                    finished = event
    except (PromptTooLong, ModelLoadError) as exc:
        error = str(exc)
    except Exception as exc:
        log.exception("Generation of message %s failed", message.id)
        error = f"The generation failed on worker {worker_name}: {exc}. Try again."
    finally:
        current_generation = None

    if finished is not None:
        message.finish(
            state=Message.State.ABORTED
            if finished.finish_reason == "aborted"
            else Message.State.DONE,
            content=finished.content,
            finish_reason=finished.finish_reason,
            prompt_tokens=finished.prompt_tokens,
            completion_tokens=finished.completion_tokens,
            cached_tokens=finished.cached_tokens,
            trimmed=asdict(finished.trimmed) if finished.trimmed else None,
            timings=_timings(message, finished),
        )
    else:
        message.finish(
            state=Message.State.FAILED,
            content="".join(parts),
            finish_reason="error",
            error=error,
        )
    message.conversation.touch()
    stream.finished(message.done_frame())
