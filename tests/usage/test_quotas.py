"""Quotas and rate limits (usage.quotas): which limit applies, exact counting under concurrency,
the socket's `quota_exceeded` and /v1's 429, and real tokens of real answers counted."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import openai
import pytest
from django.contrib.auth.models import Group
from django.test import override_settings
from django.utils import timezone
from rq import Queue

from chat.errors import ChatError
from chat.models import Message
from chat.options import options_parse
from chat.submission import prompt_submit
from inference.presence import generation_queue_name
from tests.chat.socket_client import collect, open_socket, send_prompt
from tests.chat.test_submission import submissions_at_once, submit
from usage.models import DailyUsage, Quota, RequestStamp
from usage.quotas import limits_for
from wizweb.apikeys import apikey_create
from wizweb.redis_server import redis_connection

pytestmark = pytest.mark.django_db(transaction=True)

IDLE_QUEUES = ["idle-high", "idle", "idle-low"]


@pytest.fixture
def queues_no_worker_serves() -> Iterator[None]:
    # The session's inference worker may be running: these answers must stay queued.
    with override_settings(GENERATION_QUEUES=IDLE_QUEUES):
        yield
    connection = redis_connection()
    for priority in ("high", "normal", "low"):
        Queue(generation_queue_name(priority), connection=connection).empty()


def test_a_users_own_quota_beats_their_groups_and_the_groups_beat_the_default(
    owner: Any, outsider: Any
) -> None:
    kids, guests = Group.objects.create(name="kids"), Group.objects.create(name="guests")
    owner.groups.add(kids, guests)
    with override_settings(WIZ_TOKENS_PER_DAY=1000, WIZ_REQUESTS_PER_MINUTE=3):
        assert limits_for(owner).tokens_per_day == 1000
        Quota.objects.create(group=kids, tokens_per_day=50, requests_per_minute=2)
        Quota.objects.create(group=guests, tokens_per_day=80)
        # The most generous group that sets a field; the default for a field none sets.
        assert limits_for(owner).tokens_per_day == 80
        assert limits_for(owner).requests_per_minute == 2
        Quota.objects.create(user=owner, tokens_per_day=10)
        assert limits_for(owner).tokens_per_day == 10
        assert limits_for(owner).requests_per_minute == 2
        # 0 is no limit, and is the most generous.
        Quota.objects.filter(group=guests).update(requests_per_minute=0)
        assert limits_for(owner).requests_per_minute == 0
        # Someone in neither group has the defaults.
        assert limits_for(outsider).tokens_per_day == 1000
        assert limits_for(outsider).requests_per_minute == 3


@override_settings(WIZ_MAX_PENDING_PER_USER=50)
@pytest.mark.usefixtures("queues_no_worker_serves")
def test_exactly_the_limit_of_simultaneous_requests_goes_through(
    owner: Any, outsider: Any, default_model: Any
) -> None:
    Quota.objects.create(user=owner, requests_per_minute=5)
    results = submissions_at_once(owner, 20)
    assert sorted(results) == ["accepted"] * 5 + ["quota_exceeded"] * 15
    assert Message.objects.filter(conversation__owner=owner, role="assistant").count() == 5
    assert RequestStamp.objects.filter(user=owner).count() == 5
    # The outsider has no quota and is not slowed by the owner's.
    for _ in range(6):
        submit(outsider)


@pytest.mark.usefixtures("queues_no_worker_serves")
def test_a_refused_request_counts_nothing(owner: Any, default_model: Any) -> None:
    Quota.objects.create(user=owner, requests_per_minute=2)
    with pytest.raises(ChatError) as caught:
        prompt_submit(
            user=owner,
            conversation_id=uuid.UUID(int=0),  # a conversation nobody has
            content="hi",
            options=options_parse({}),
        )
    assert caught.value.code == "not_found"
    assert not RequestStamp.objects.exists()
    submit(owner)
    submit(owner)
    with pytest.raises(ChatError) as caught:
        submit(owner)
    assert caught.value.code == "quota_exceeded"
    assert "limit is 2 a minute" in str(caught.value)
    assert "You can ask again at" in str(caught.value)
    assert 0 < (caught.value.retry_after or 0) <= 60


@pytest.mark.usefixtures("queues_no_worker_serves")
def test_requests_older_than_a_minute_no_longer_count(owner: Any, default_model: Any) -> None:
    Quota.objects.create(user=owner, requests_per_minute=1)
    RequestStamp.objects.create(user=owner, at=timezone.now() - timedelta(seconds=61))
    submit(owner)
    assert RequestStamp.objects.filter(user=owner).count() == 1  # the old one is gone


def test_a_day_over_its_tokens_is_refused_until_midnight(owner: Any, default_model: Any) -> None:
    Quota.objects.create(user=owner, tokens_per_day=100)
    DailyUsage.objects.create(
        user=owner, day=timezone.localdate(), model_name="m", prompt_tokens=60, completion_tokens=40
    )
    with pytest.raises(ChatError) as caught:
        submit(owner)
    assert caught.value.code == "quota_exceeded"
    assert "used 100 of your 100 tokens for today" in str(caught.value)
    assert "resets at midnight UTC" in str(caught.value)
    tomorrow = timezone.localdate() + timedelta(days=1)
    midnight = timezone.make_aware(
        timezone.datetime.combine(tomorrow, timezone.datetime.min.time())
    )
    expected = (midnight - timezone.now()).total_seconds()
    # Computed a moment before `expected`, so not less than it.
    assert expected - 1 <= (caught.value.retry_after or 0) <= expected + 60


@pytest.mark.usefixtures("channel_layer_closed")
async def test_the_socket_counts_the_real_tokens_of_an_answer_and_then_refuses(
    owner: Any, outsider: Any, default_model: Any, inference_worker: Any
) -> None:
    await Quota.objects.acreate(user=owner, tokens_per_day=1)
    socket = await open_socket(owner)
    try:
        accepted = await send_prompt(socket, "Say hi.", max_tokens=4, seed=1)
        frames = await collect(
            socket,
            lambda fs: any(f["type"] == "done" and f["message"] == accepted["message"] for f in fs),
        )
        done = next(f for f in frames if f["type"] == "done")
        usage = done["usage"]
        row = await DailyUsage.objects.aget(user=owner)
        assert row.answers == 1
        assert row.prompt_tokens == usage["prompt_tokens"]
        assert row.completion_tokens == usage["completion_tokens"]
        await socket.send_json_to(
            {"type": "prompt", "content": "Again.", "options": {}, "client_id": "c2"}
        )
        error = await socket.receive_json_from(timeout=10)
        while error["type"] != "error":  # nothing else is expected, but wait for the answer
            error = await socket.receive_json_from(timeout=10)
        assert error["code"] == "quota_exceeded"
        assert error["client_id"] == "c2"
        assert "resets at midnight" in error["message"]
    finally:
        await socket.disconnect()
    # The outsider's day is untouched by the owner's.
    other = await open_socket(outsider)
    try:
        accepted = await send_prompt(other, "Say hi.", max_tokens=2)
        await collect(
            other,
            lambda fs: any(f["type"] == "done" and f["message"] == accepted["message"] for f in fs),
        )
    finally:
        await other.disconnect()


@pytest.fixture
def outsider_key(outsider: Any) -> str:
    return apikey_create(user=outsider, name="tests").secret


def test_v1_answers_429_in_openais_shape_with_retry_after(
    web_server: str, owner: Any, outsider: Any, default_model: Any, outsider_key: str
) -> None:
    Quota.objects.create(user=owner, requests_per_minute=2)
    Quota.objects.create(user=outsider, requests_per_minute=2)
    now = timezone.now()
    RequestStamp.objects.create(user=outsider, at=now - timedelta(seconds=30))
    RequestStamp.objects.create(user=outsider, at=now - timedelta(seconds=20))
    with (
        openai.OpenAI(base_url=f"{web_server}/v1", api_key=outsider_key, max_retries=0) as client,
        pytest.raises(openai.RateLimitError) as caught,
    ):
        client.chat.completions.create(
            model=default_model.name, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    error = caught.value
    assert error.status_code == 429
    assert error.code == "quota_exceeded"
    assert error.type == "rate_limit_error"
    assert "limit is 2 a minute" in error.message
    retry_after = int(error.response.headers["Retry-After"])
    assert 0 < retry_after <= 31  # the older request leaves the window first
    assert not RequestStamp.objects.filter(user=owner).exists()


def test_v1_answers_429_when_the_days_tokens_are_spent(
    web_server: str, outsider: Any, default_model: Any, outsider_key: str
) -> None:
    Quota.objects.create(user=outsider, tokens_per_day=10)
    DailyUsage.objects.create(
        user=outsider, day=timezone.localdate(), model_name="m", completion_tokens=10
    )
    request = urllib.request.Request(
        f"{web_server}/v1/completions",
        data=b'{"model": "%s", "prompt": "hi"}' % default_model.name.encode(),
        headers={"Authorization": f"Bearer {outsider_key}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 429
    assert int(caught.value.headers["Retry-After"]) > 0

    body = json.loads(caught.value.read())
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == "quota_exceeded"


def test_staff_set_a_group_quota_in_the_admin(owner: Any) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    root = get_user_model().objects.create_superuser("root", password="x")
    kids = Group.objects.create(name="kids")
    owner.groups.add(kids)
    client = Client()
    client.force_login(root)
    response = client.post(
        "/admin/usage/quota/add/",
        {"group": kids.pk, "tokens_per_day": "2000", "requests_per_minute": ""},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert limits_for(owner).tokens_per_day == 2000
    # Neither a user nor a group: refused with the form's error, nothing saved.
    response = client.post("/admin/usage/quota/add/", {"tokens_per_day": "5"})
    assert response.status_code == 200
    assert Quota.objects.count() == 1


def test_only_staff_with_the_right_may_see_quotas_in_the_admin(owner: Any) -> None:
    from django.test import Client

    client = Client()
    client.force_login(owner)
    assert client.get("/admin/usage/quota/").status_code == 302  # to the admin's login
