"""The OpenAI-compatible API, driven by the real `openai` client against daphne, a real worker
and the real model."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema
import llama_cpp
import openai
import pytest
from django.test import Client

from chat.models import Conversation, Message
from tests.chat.test_consumer import slow_response_format
from tests.chat.test_generation import SCHEMA, TIME, WEATHER
from tests.processes import wait_for
from wizweb.apikeys import apikey_create, apikey_revoke
from wizweb.models import ApiKey

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def secret(owner: Any) -> str:
    return apikey_create(user=owner, name="tests").secret


@pytest.fixture
def client(
    web_server: str, secret: str, default_model: Any, inference_worker: Any
) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{web_server}/v1", api_key=secret, max_retries=0) as client:
        yield client


def test_it_lists_the_ready_models(client: openai.OpenAI, default_model: Any) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == [default_model.name]


def test_it_answers_a_chat_completion(client: openai.OpenAI, default_model: Any) -> None:
    completion = client.chat.completions.create(
        model=default_model.name,
        messages=[
            {"role": "system", "content": "You are brief."},
            {"role": "user", "content": "Name a colour."},
        ],
        max_tokens=20,
        seed=1,
    )
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_it_streams_a_chat_completion_with_usage_at_the_end(
    client: openai.OpenAI, default_model: Any, owner: Any
) -> None:
    stream = client.chat.completions.create(
        model=default_model.name,
        messages=[{"role": "user", "content": "Write a sentence about snow."}],
        max_tokens=40,
        seed=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2
    assert finish in (["stop"], ["length"])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert text.strip()


def test_it_keeps_api_calls_out_of_history_unless_the_key_says_so(
    web_server: str, owner: Any, default_model: Any, inference_worker: Any
) -> None:
    for keep in (False, True):
        key = apikey_create(user=owner, name=f"keep={keep}", keep_history=keep).secret
        with openai.OpenAI(base_url=f"{web_server}/v1", api_key=key, max_retries=0) as client:
            client.chat.completions.create(
                model=default_model.name,
                messages=[{"role": "user", "content": f"Hi {keep}"}],
                max_tokens=5,
            )
    titles = list(Conversation.objects.values_list("title", flat=True))
    assert titles == ["Hi True"]
    assert Conversation.objects.get().in_history


def test_it_answers_by_a_json_schema(client: openai.OpenAI, default_model: Any) -> None:
    completion = client.chat.completions.create(
        model=default_model.name,
        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "cat", "schema": SCHEMA}},
        max_tokens=120,
        seed=3,
        temperature=0.3,
    )
    jsonschema.validate(json.loads(completion.choices[0].message.content or ""), SCHEMA)


def test_it_returns_a_tool_call_that_parses(client: openai.OpenAI, default_model: Any) -> None:
    completion = client.chat.completions.create(
        model=default_model.name,
        messages=[{"role": "user", "content": "What is the weather in Paris right now?"}],
        tools=[WEATHER, TIME],
        tool_choice="auto",
        seed=1,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name in ("get_weather", "get_time")
    assert isinstance(json.loads(call.function.arguments), dict)


def test_it_continues_after_a_tool_result(client: openai.OpenAI, default_model: Any) -> None:
    completion = client.chat.completions.create(
        model=default_model.name,
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 degrees."},
        ],
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=30,
        seed=1,
    )
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.choices[0].message.content


def test_it_completes_a_raw_prompt(client: openai.OpenAI, default_model: Any) -> None:
    completion = client.completions.create(
        model=default_model.name,
        prompt="The capital of France is",
        max_tokens=8,
        temperature=0,
        seed=1,
    )
    assert completion.object == "text_completion"
    assert completion.choices[0].text
    assert completion.usage is not None
    llama = llama_cpp.Llama(model_path=str(default_model.path), vocab_only=True, verbose=False)
    # No chat template around the prompt: exactly the prompt's own tokens.
    assert completion.usage.prompt_tokens == len(llama.tokenize(b"The capital of France is"))
    streamed = client.completions.create(
        model=default_model.name,
        prompt="The capital of France is",
        max_tokens=8,
        temperature=0,
        seed=1,
        stream=True,
    )
    assert "".join(c.choices[0].text for c in streamed) == completion.choices[0].text


def test_it_refuses_a_missing_or_revoked_key(
    web_server: str, owner: Any, secret: str, default_model: Any
) -> None:
    base = f"{web_server}/v1"
    with (
        openai.OpenAI(base_url=base, api_key="wiz-nonsense", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        client.models.list()
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    apikey_revoke(user=owner, key_id=owner.api_keys.get().pk)
    with (
        openai.OpenAI(base_url=base, api_key=secret, max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.chat.completions.create(
            model=default_model.name, messages=[{"role": "user", "content": "hi"}]
        )


def test_it_answers_404_for_a_model_that_is_not_ready(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.body["param"] == "model"
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"n": 2}, "n"),
        ({"warp_speed": 9}, "warp_speed"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
    ],
)
def test_it_names_the_bad_parameter(
    client: openai.OpenAI, default_model: Any, extra: dict, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=default_model.name,
            messages=[{"role": "user", "content": "hi"}],
            extra_body=extra,
        )
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == param
    assert not Message.objects.exists()


def test_it_answers_429_past_the_users_queue_limit(
    client: openai.OpenAI, owner: Any, default_model: Any
) -> None:
    conversation = Conversation.objects.create(owner=owner, title="busy")
    for _ in range(4):
        # Running on the live test worker, so nothing reaps them during the test.
        Message.objects.create(
            conversation=conversation, role="assistant", state="running", worker="test-inference"
        )
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model=default_model.name, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "5"


def test_a_client_that_disconnects_mid_stream_frees_the_worker(
    client: openai.OpenAI, default_model: Any
) -> None:
    # Kept in history, so the stopped answer can be looked at: a key without history has its
    # conversation removed as soon as the generation is over, possibly before the test looks.
    ApiKey.objects.update(keep_history=True)
    stream = client.chat.completions.create(
        model=default_model.name,
        messages=[{"role": "user", "content": "Write a very long essay about rivers."}],
        max_tokens=600,
        seed=4,
        stream=True,
    )
    received = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received += 1
        if received == 3:
            break
    stream.close()

    def stopped() -> Message | None:
        message = Message.objects.filter(role="assistant").first()
        return message if message and message.is_finished else None

    message = wait_for(stopped, timeout=20, what="the abandoned generation to stop")
    assert message.state == Message.State.ABORTED
    assert message.completion_tokens is not None and message.completion_tokens < 600
    started = time.monotonic()
    client.chat.completions.create(
        model=default_model.name, messages=[{"role": "user", "content": "Hi"}], max_tokens=5
    )
    assert time.monotonic() - started < 15


def test_the_event_stream_ends_with_done(
    web_server: str, secret: str, default_model: Any, inference_worker: Any
) -> None:
    request = urllib.request.Request(
        f"{web_server}/v1/chat/completions",
        data=json.dumps(
            {
                "model": default_model.name,
                "stream": True,
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "Hi"}],
            }
        ).encode(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [line for line in response.read().decode().split("\n\n") if line]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0].removeprefix("data: "))
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"]["role"] == "assistant"


def post_completion(secret: str, body: str | dict[str, Any], path: str = "chat/completions") -> Any:
    """A request through Django's test client: a 500 comes back as a response, not raised."""
    text = body if isinstance(body, str) else json.dumps(body)
    return Client(raise_request_exception=False).post(
        f"/v1/{path}", text, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {secret}"
    )


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("{not json", "not valid JSON"),
        # json.loads raises RecursionError, not ValueError, this deep.
        ('{"model": "m", "messages": ' + nested(100_000) + "}", "levels deep"),
        ('{"model": "m", "metadata": ' + nested(65) + ', "messages": []}', "levels deep"),
        (
            '{"model": "m", "messages": [{"role": "user", "content": "hi \\ud800"}]}',
            "lone UTF-16 surrogate",
        ),
        ('{"model": "m", "temperature": NaN, "messages": []}', "not a JSON number"),
    ],
)
@pytest.mark.parametrize("path", ["chat/completions", "completions"])
def test_it_answers_400_to_a_body_it_cannot_read(
    secret: str, path: str, body: str, says: str
) -> None:
    response = post_completion(secret, body, path)
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_json")
    assert says in error["message"]
    assert not Message.objects.exists()


CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def test_it_refuses_more_messages_than_a_conversation_may_hold(secret: str) -> None:
    turn = {"role": "user", "content": "hi"}
    response = post_completion(secret, {"model": "m", "messages": [turn] * 5001})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages"
    assert "the limit is 5000" in error["message"]
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": ["user"], "content": "hi"}, "messages[0].role"),
        ({"role": "user", "content": [{"type": "text", "text": 5}]}, "messages[0].content[0].text"),
        ({"role": "user", "content": [{"type": "image_url"}]}, "messages[0].content[0]"),
        ({"role": "assistant", "tool_calls": "f()"}, "messages[0].tool_calls"),
        ({"role": "assistant", "tool_calls": [1]}, "messages[0].tool_calls[0]"),
        ({"role": "assistant", "tool_calls": [{"id": "c1"}]}, "messages[0].tool_calls[0].function"),
        (
            {"role": "assistant", "tool_calls": [CALL, {"function": {"name": 5}}]},
            "messages[0].tool_calls[1].function.name",
        ),
        (
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}]},
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]},
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {
                "role": "assistant",
                "tool_calls": [{"function": {"name": "f", "arguments": nested(100)}}],
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_it_names_the_bad_part_of_a_message(
    secret: str, message: dict[str, Any], param: str
) -> None:
    response = post_completion(secret, {"model": "m", "messages": [message]})
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["param"] == param
    assert error["message"].endswith(".")
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"stream": "yes"}, "stream"),
        ({"stream": True, "stream_options": "yes"}, "stream_options"),
        ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options"),
        ({"tool_choice": {"type": "function", "function": "f"}, "tools": []}, "tools"),
        (
            {
                "tool_choice": {"type": "function", "function": "f"},
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            "tool_choice",
        ),
    ],
)
def test_it_names_a_bad_stream_or_tool_parameter(
    secret: str, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    response = post_completion(secret, body)
    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]["param"] == param
    assert not Message.objects.exists()


def test_it_checks_options_off_the_event_loop(web_server: str, secret: str) -> None:
    """Against daphne itself: Django's test clients share one thread for sync work between
    requests, which daphne does not, so they would measure that thread instead."""
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        # Refused after the slow conversion (temperature comes second), so nothing is queued.
        "response_format": slow_response_format(),
        "temperature": 9,
    }
    auth = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    started = time.monotonic()

    def busy() -> tuple[int, float]:
        request = urllib.request.Request(
            f"{web_server}/v1/chat/completions", data=json.dumps(body).encode(), headers=auth
        )
        try:
            urllib.request.urlopen(request, timeout=60)
        except urllib.error.HTTPError as exc:
            return exc.code, time.monotonic() - started
        raise AssertionError("the options were accepted")

    def other() -> tuple[int, float]:
        time.sleep(0.3)  # the busy request is converting now
        request = urllib.request.Request(f"{web_server}/v1/models", headers=auth)
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, time.monotonic() - started

    with ThreadPoolExecutor(2) as pool:
        refused, listed = pool.submit(busy), pool.submit(other)
        (status, answered), (listed_status, listed_after) = refused.result(), listed.result()
    assert (status, listed_status) == (400, 200)
    # On the event loop, the conversion would hold every other request until it is done; off
    # it, the listing is answered first (slowed by the conversion's share of the GIL, so no
    # tighter bound holds on a busy box). The order tells, not a clock.
    assert listed_after < answered, (listed_after, answered)
