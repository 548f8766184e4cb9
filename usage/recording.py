"""Adding a finished answer to its user's daily usage row, in the transaction that saves the
answer's end (chat.models.Message.finish, and chat.queue when the reaper fails an answer of a
dead worker), so the figures are exact: an answer is counted once, when it ends, or not at all."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from usage.models import DailyUsage

if TYPE_CHECKING:
    from chat.models import Message

# Time to first token is kept as a histogram whose buckets grow by a tenth: bucket b holds
# answers whose ttft is at most TTFT_FIRST_MS * TTFT_RATIO**b (bucket 0: up to 10 ms).
TTFT_FIRST_MS = 10.0
TTFT_RATIO = 1.1
TTFT_LAST_BUCKET = 150  # about 16 minutes; anything slower is counted there


def ttft_bucket(ms: float) -> int:
    if ms <= TTFT_FIRST_MS:
        return 0
    return min(math.ceil(math.log(ms / TTFT_FIRST_MS, TTFT_RATIO) - 1e-9), TTFT_LAST_BUCKET)


def ttft_bucket_ms(bucket: int) -> float:
    """The upper bound of a bucket, in ms."""
    return TTFT_FIRST_MS * TTFT_RATIO**bucket


def usage_record(message: Message) -> None:
    """Count `message`, whose end has just been saved, in its owner's row for its model and
    day. Must run inside the transaction that saved it."""
    from chat.models import Conversation

    owner_id = (
        Conversation.objects.filter(pk=message.conversation_id)
        .values_list("owner_id", flat=True)
        .first()
    )
    if owner_id is None:
        return  # the conversation was deleted meanwhile: nobody to count it for
    day = timezone.localdate(message.finished_at or timezone.now())
    with transaction.atomic():
        # Locked, so two answers of one user and model ending at once both count; a row created
        # by a concurrent end makes get_or_create read (and lock) that one instead.
        row, _ = DailyUsage.objects.select_for_update().get_or_create(
            user_id=owner_id, day=day, model_name=message.model_name[:200]
        )
        row.answers += 1
        row.failed += message.state == message.State.FAILED
        row.prompt_tokens += message.prompt_tokens or 0
        row.completion_tokens += message.completion_tokens or 0
        row.cached_tokens += message.cached_tokens or 0
        ttft_ms = (message.timings or {}).get("ttft_ms")
        if ttft_ms is not None:
            bucket = str(ttft_bucket(float(ttft_ms)))
            row.ttft_buckets[bucket] = row.ttft_buckets.get(bucket, 0) + 1
        row.save()
