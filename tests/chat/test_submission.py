"""Prompts into the queue: the model asked for, the pending limit, prompts sent at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection as db_connection
from django.test import override_settings
from rq import Queue

from chat.errors import ChatError
from chat.models import Conversation, Message
from chat.options import options_parse
from chat.submission import prompt_submit
from inference.presence import (
    generation_queue_name,
)
from wizweb.redis_server import redis_connection

pytestmark = pytest.mark.django_db(transaction=True)


def submit(user: Any, content: str = "hi", **options: Any) -> Any:
    return prompt_submit(
        user=user,
        conversation_id=None,
        content=content,
        options=options_parse(options, max_priority="high"),
    )


def submissions_at_once(user: Any, count: int) -> list[str]:
    """`count` prompts of `user` submitted together from as many threads (let go at once by
    a barrier): "accepted" or the refusal's code for each."""
    start = threading.Barrier(count)

    def prompt(_: int) -> str:
        try:
            start.wait()
            submit(user)
            return "accepted"
        except ChatError as exc:
            return exc.code
        finally:
            db_connection.close()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(prompt, range(count)))


@pytest.fixture(autouse=True)
def queues_no_worker_serves() -> Any:
    # The session's inference worker may be running: these tests watch rows stay queued.
    with override_settings(GENERATION_QUEUES=["idle-high", "idle", "idle-low"]):
        yield


def drop_queued_jobs() -> None:
    """Empty the queues (and delete their jobs)."""
    connection = redis_connection()
    for priority in ("high", "normal", "low"):
        Queue(generation_queue_name(priority), connection=connection).empty()


@override_settings(WIZ_MAX_PENDING_PER_USER=2)
def test_it_refuses_a_prompt_past_the_pending_limit(
    owner: Any, outsider: Any, default_model: Any
) -> None:
    submit(owner)
    submit(owner)
    drop_queued_jobs()
    with pytest.raises(ChatError) as caught:
        submit(owner)
    assert caught.value.code == "too_many_pending"
    assert "limit is 2" in str(caught.value)
    submit(outsider)  # the limit is per user
    drop_queued_jobs()
    assert Message.objects.filter(conversation__owner=owner).count() == 4


@override_settings(WIZ_MAX_PENDING_PER_USER=4)
def test_it_holds_the_pending_limit_against_simultaneous_prompts(
    owner: Any, default_model: Any
) -> None:
    results = submissions_at_once(owner, 10)
    drop_queued_jobs()
    assert sorted(results) == ["accepted"] * 4 + ["too_many_pending"] * 6
    assert Message.objects.filter(conversation__owner=owner, role="assistant").count() == 4


def test_it_refuses_an_unknown_model(owner: Any, default_model: Any) -> None:
    with pytest.raises(ChatError) as caught:
        submit(owner, model="no-such-model")
    assert caught.value.code == "model_not_found"
    assert not Conversation.objects.exists()
