"""A thinking model through every path: the worker's frames and saved row, and `/v1` driven
by the real `openai` client. The model is the default GGUF with a Qwen3-style template
(tests.thinking_model), made to think by a response prefix that opens its block."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from chat.generation import generation_history
from chat.models import Conversation, Message
from models_admin.models import LocalModel
from tests.chat.socket_client import frames_until_done, open_socket, send_prompt
from tests.chat.test_generation import WEATHER
from tests.processes import Child
from tests.thinking_model import THINKER
from wizweb.apikeys import apikey_create

pytestmark = pytest.mark.django_db(transaction=True)

THINK = {"response_prefix": "<think>\n", "reasoning_budget": 6}
QUESTION = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def client(web_server: str, owner: Any, thinker_worker: Child) -> Iterator[openai.OpenAI]:
    secret = apikey_create(user=owner, name="tests", keep_history=True).secret
    with openai.OpenAI(base_url=f"{web_server}/v1", api_key=secret, max_retries=0) as client:
        yield client


def test_it_reads_the_thinking_template_into_the_models_row(thinker: LocalModel) -> None:
    assert thinker.chat_template and "enable_thinking" in thinker.chat_template


def test_a_chat_completion_has_the_reasoning_apart(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=THINKER,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=40,
        seed=1,
        temperature=0,
        extra_body=THINK,
    )
    message = completion.choices[0].message
    reasoning = (message.model_extra or {}).get("reasoning_content")
    assert reasoning
    assert "<think>" not in (message.content or "") and "</think>" not in (message.content or "")
    assert completion.usage is not None
    details = completion.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens is not None
    assert 6 <= details.reasoning_tokens <= completion.usage.completion_tokens
    saved = Message.objects.get(role=Message.Role.ASSISTANT)
    assert saved.reasoning == reasoning
    assert saved.content == (message.content or "")
    assert saved.reasoning_tokens == details.reasoning_tokens
    assert saved.timings["reasoning_ms"] >= 0
    # The thinking goes along for a template that reads it (the engine drops it otherwise).
    follow = Message.objects.create(
        conversation=saved.conversation, parent=saved, role=Message.Role.USER, content="And 3+3?"
    )
    turns = generation_history(follow)
    assert turns[-1] == {
        "role": "assistant",
        "content": saved.content,
        "reasoning_content": reasoning,
    }


def test_a_streamed_chat_completion_sends_reasoning_deltas_first(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=THINKER,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=40,
        seed=1,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=THINK,
    )
    kinds: list[str] = []
    reasoning, content = [], []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            if extra.get("reasoning_content"):
                reasoning.append(extra["reasoning_content"])
                kinds.append("reasoning")
            if choice.delta.content:
                content.append(choice.delta.content)
                kinds.append("content")
    assert reasoning
    assert kinds == sorted(kinds, key=lambda k: k == "content")
    saved = Message.objects.get(role=Message.Role.ASSISTANT)
    assert "".join(reasoning) == saved.reasoning
    assert "".join(content) == saved.content
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == saved.reasoning_tokens


def test_reasoning_effort_none_switches_thinking_off(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=THINKER,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=12,
        seed=1,
        temperature=0,
        reasoning_effort="none",  # type: ignore[arg-type]
    )
    message = completion.choices[0].message
    assert message.content
    assert not (message.model_extra or {}).get("reasoning_content")
    assert completion.usage is not None
    details = completion.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == 0


def test_it_refuses_a_budget_beside_json_mode(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="reasoning_budget"):
        client.chat.completions.create(
            model=THINKER,
            messages=QUESTION,  # type: ignore[arg-type]
            response_format={"type": "json_object"},
            extra_body={"reasoning_budget": 8},
        )


def test_a_conversation_keeps_its_reasoning_through_export_and_import(owner: Any) -> None:
    from chat.api import conversation_export
    from chat.conversations import conversation_import

    conversation = Conversation.objects.create(owner=owner, title="Sums")
    question = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content="What is 2+2?"
    )
    Message.objects.create(
        conversation=conversation,
        parent=question,
        role=Message.Role.ASSISTANT,
        content="4",
        reasoning="Two and two make four.",
        note="",
    )
    copy = conversation_import(user=owner, data=conversation_export(conversation))
    answer = copy.messages.get(role=Message.Role.ASSISTANT)
    assert (answer.content, answer.reasoning) == ("4", "Two and two make four.")


def test_a_model_that_does_not_think_refuses_thinking_before_anything_is_queued(
    web_server: str, owner: Any, default_model: LocalModel
) -> None:
    secret = apikey_create(user=owner, name="tests").secret
    with openai.OpenAI(base_url=f"{web_server}/v1", api_key=secret, max_retries=0) as client:
        for extra in ({"reasoning": True}, {"reasoning_budget": 8}, {"reasoning_effort": "low"}):
            with pytest.raises(openai.BadRequestError, match="does not think") as refused:
                client.chat.completions.create(
                    model=default_model.name,
                    messages=QUESTION,  # type: ignore[arg-type]
                    extra_body=extra,
                )
            assert refused.value.param == next(iter(extra))
    assert not Message.objects.exists()


@pytest.mark.usefixtures("channel_layer_closed")
async def test_the_socket_sends_thinking_chunks_apart_and_subscribing_again_gets_the_same(
    owner: Any, thinker: LocalModel, thinker_worker: Child
) -> None:
    socket = await open_socket(owner)
    accepted = await send_prompt(
        socket, "What is 2+2?", model=THINKER, seed=1, temperature=0, max_tokens=40, **THINK
    )
    frames = await frames_until_done(socket)
    done = frames[-1]
    assert done["type"] == "done", frames
    chunks = [f for f in frames if f["type"] == "chunk"]
    reasoning = "".join(c["text"] for c in chunks if c["channel"] == "reasoning")
    content = "".join(c["text"] for c in chunks if c["channel"] == "content")
    assert reasoning and reasoning == done["reasoning"]
    assert content == done["content"]
    details = done["usage"]["completion_tokens_details"]
    assert details["reasoning_tokens"] >= THINK["reasoning_budget"]
    assert done["timings"]["reasoning_ms"] >= 0
    # A page that reloads subscribes from the start and gets the same channels from the log.
    await socket.send_json_to({"type": "subscribe", "message": accepted["message"], "after": 0})
    again = await frames_until_done(socket)
    await socket.disconnect()
    assert [(f["channel"], f["text"]) for f in again if f["type"] == "chunk"] == [
        (c["channel"], c["text"]) for c in chunks
    ]


def test_a_thinking_model_still_calls_tools(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=THINKER,
        messages=[{"role": "user", "content": "What is the weather in Paris right now?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        seed=1,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert isinstance(json.loads(call.function.arguments), dict)  # type: ignore[union-attr]


# A response prefix that opens the thinking: the call grammar then asks for the rest of the
# block, closed, before the calls (chat.tools).
THINK_THEN_CALL = {"response_prefix": "<think>\nThe user asks for the weather in Paris, so I"}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris right now?"}]


def assert_thoughts_apart(reasoning: str, content: str, calls: list[dict[str, Any]]) -> None:
    assert reasoning.startswith("The user asks for the weather in Paris, so I"), reasoning
    assert "<think>" not in reasoning and "</think>" not in reasoning
    assert not content
    assert calls and calls[0]["function"]["name"] == "get_weather"
    arguments = calls[0]["function"]["arguments"]
    assert isinstance(json.loads(arguments), dict)
    assert "think>" not in arguments and "weather in Paris, so" not in arguments


def test_a_thinking_model_thinks_then_calls_a_tool_with_its_thoughts_apart(
    client: openai.OpenAI,
) -> None:
    completion = client.chat.completions.create(
        model=THINKER,
        messages=WEATHER_QUESTION,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        seed=1,
        temperature=0,
        extra_body=THINK_THEN_CALL,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    reasoning = (choice.message.model_extra or {}).get("reasoning_content") or ""
    calls = [call.model_dump() for call in choice.message.tool_calls or []]
    assert_thoughts_apart(reasoning, choice.message.content or "", calls)
    saved = Message.objects.get(role=Message.Role.ASSISTANT)
    assert (saved.reasoning, saved.content) == (reasoning, "")
    assert saved.tool_calls[0]["function"] == calls[0]["function"]
    assert saved.reasoning_tokens and saved.timings["reasoning_ms"] >= 0


@pytest.mark.usefixtures("channel_layer_closed")
async def test_the_socket_streams_the_thoughts_before_a_tool_call_and_keeps_them_apart(
    owner: Any, thinker: LocalModel, thinker_worker: Child
) -> None:
    socket = await open_socket(owner)
    await send_prompt(
        socket,
        WEATHER_QUESTION[0]["content"],
        model=THINKER,
        seed=1,
        temperature=0,
        tools=[WEATHER],
        tool_choice="required",
        **THINK_THEN_CALL,
    )
    frames = await frames_until_done(socket)
    await socket.disconnect()
    done = frames[-1]
    assert done["type"] == "done" and done["finish_reason"] == "tool_calls", frames
    chunks = [f for f in frames if f["type"] == "chunk"]
    assert chunks and all(c["channel"] == "reasoning" for c in chunks)
    assert "".join(c["text"] for c in chunks) == done["reasoning"]
    assert_thoughts_apart(done["reasoning"], done["content"], done["tool_calls"])
