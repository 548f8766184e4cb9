"""One log line per generation (logger `chat.generations`), written when its answer is saved
finished: who, which model and worker, the outcome, the real token counts and the timings.

Never the prompt, the answer or an error's text: only counts, names and states. (A Message's
own repr shows its text, so it is never passed to a log call.)"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import DatabaseError

if TYPE_CHECKING:
    from chat.models import Message

log = logging.getLogger("chat.generations")


def generation_log(message: Message) -> None:
    """Log the end of `message` as saved. A failure to read the user's name is not the
    answer's: the line is written without it."""
    owner_id: int | None = None
    user: str | None = None
    try:
        owner_id = message.conversation.owner_id
        user = (
            get_user_model().objects.filter(pk=owner_id).values_list("username", flat=True).first()
        )
    except DatabaseError:
        pass
    timings: dict[str, Any] = message.timings or {}
    fields = {
        "message_id": str(message.id),
        "conversation_id": str(message.conversation_id),
        "user": user,
        "user_id": owner_id,
        "model": message.model_name,
        "worker": message.worker or None,
        "priority": message.priority,
        "mode": message.mode,
        "state": message.state,
        "finish_reason": message.finish_reason,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "cached_tokens": message.cached_tokens,
        "queue_ms": timings.get("queue_ms"),
        "ttft_ms": timings.get("ttft_ms"),
        "total_ms": timings.get("total_ms"),
        "tokens_per_s": timings.get("tokens_per_s"),
    }
    log.info("generation %s %s", message.state, message.finish_reason, extra=fields)
