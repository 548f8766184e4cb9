"""Every generation option honoured end to end: socket → queue → worker → real model → socket.

Each option is compared against the same request without it (same prompt and seed), so a test
fails if the option were dropped anywhere on the way."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from chat.models import Conversation, Message
from tests.chat.socket_client import frames_until_done, open_socket
from tests.conftest import SECOND_MODEL, TOM_AS_JSON, start_worker

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel_layer_closed"),
]

BASE = {"seed": 9, "temperature": 1.0, "max_tokens": 24}
PROMPT = "Tell me something about cats."


async def answer(
    user: Any, content: str = PROMPT, conversation: str | None = None, **options: Any
) -> dict:
    socket = await open_socket(user)
    await socket.send_json_to(
        {"type": "prompt", "content": content, "conversation": conversation, "options": options}
    )
    frames = await frames_until_done(socket)
    await socket.disconnect()
    done = frames[-1]
    assert done["type"] == "done", done
    return done


@pytest.fixture
async def baseline(owner: Any, default_model: Any, inference_worker: Any) -> str:
    first = await answer(owner, **BASE)
    again = await answer(owner, **BASE)
    assert first["content"] == again["content"], "the same seed must give the same text"
    return str(first["content"])


CHANGES = [
    ("seed", 10),
    ("temperature", 0.0),
    ("top_p", 0.05),
    ("top_k", 1),
    ("min_p", 0.9),
    ("repeat_penalty", 2.0),
    ("presence_penalty", 2.0),
    ("frequency_penalty", 2.0),
    ("system_prompt", "You are a pirate. Answer like a pirate."),
]


@pytest.mark.parametrize(("key", "value"), CHANGES)
async def test_each_option_changes_the_answer(
    owner: Any, baseline: str, key: str, value: Any
) -> None:
    changed = await answer(owner, **{**BASE, key: value})
    assert changed["content"] != baseline


async def test_greedy_sampling_ignores_the_seed(owner: Any, baseline: str) -> None:
    one = await answer(owner, **{**BASE, "top_k": 1, "seed": 1})
    two = await answer(owner, **{**BASE, "top_k": 1, "seed": 2})
    assert one["content"] == two["content"]


async def test_max_tokens_caps_the_answer(owner: Any, baseline: str) -> None:
    done = await answer(owner, **{**BASE, "max_tokens": 3})
    assert done["usage"]["completion_tokens"] == 3
    assert done["finish_reason"] == "length"
    assert baseline.startswith(done["content"])


async def test_stop_ends_the_answer_before_the_stop_string(owner: Any, baseline: str) -> None:
    stop = baseline.split()[2]
    done = await answer(owner, **{**BASE, "stop": [stop]})
    assert done["finish_reason"] == "stop"
    assert done["content"] == baseline[: baseline.index(stop)]


async def test_response_prefix_begins_the_answer(owner: Any, baseline: str) -> None:
    done = await answer(owner, **{**BASE, "response_prefix": "Meow! Here is a fact:"})
    assert done["content"].startswith("Meow! Here is a fact:")
    assert done["content"] != baseline


async def test_grammar_constrains_the_answer(owner: Any, baseline: str) -> None:
    done = await answer(owner, "Do cats purr?", **{**BASE, "grammar": 'root ::= "yes" | "no"'})
    assert done["content"] in ("yes", "no")


async def test_a_bad_grammar_is_refused_and_never_reaches_the_worker(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    await socket.send_json_to(
        {"type": "prompt", "content": "hi", "options": {"grammar": "root ::= ( "}}
    )
    frame = await socket.receive_json_from(timeout=10)
    await socket.disconnect()
    assert frame["code"] == "invalid_options"
    assert frame["key"] == "grammar"
    assert "not valid GBNF" in frame["message"]
    assert not await Message.objects.aexists()


async def test_a_grammar_the_model_refuses_fails_that_answer_not_the_worker(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    # Whether <...> is one token only the model knows: the worker asks llama.cpp, which would
    # have handed llama-cpp-python a null sampler (SIGSEGV) for this grammar.
    done = await answer(owner, "Hi", **{**BASE, "grammar": "root ::= <surely-not-one-token>"})
    assert done["finish_reason"] == "error"
    assert "refused by llama.cpp for this model" in done["error"]
    assert inference_worker.process.poll() is None
    after = await answer(owner, "Do cats purr?", **{**BASE, "grammar": 'root ::= "yes" | "no"'})
    assert after["content"] in ("yes", "no")


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "indoor": {"type": "boolean"},
    },
    "required": ["name", "age", "indoor"],
}


async def test_json_schema_answers_validate(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    done = await answer(
        owner,
        "Describe a cat as JSON.",
        seed=3,
        temperature=0.3,
        max_tokens=120,
        response_format={"type": "json_schema", "json_schema": {"name": "cat", "schema": SCHEMA}},
    )
    assert done["finish_reason"] == "stop"
    jsonschema.validate(json.loads(done["content"]), SCHEMA)


async def test_json_mode_answers_an_object(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    done = await answer(
        owner,
        TOM_AS_JSON,  # an object that closes in a few tokens whatever the numerics
        temperature=0.0,
        max_tokens=200,
        response_format={"type": "json_object"},
    )
    assert done["finish_reason"] == "stop"
    assert json.loads(done["content"])["name"] == "Tom"


async def test_a_follow_up_reuses_the_evaluated_history(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    first = await answer(owner, "Name a fruit.", seed=1, max_tokens=20)
    conversation = (await Message.objects.aget(pk=first["message"])).conversation_id
    second = await answer(owner, "Another one?", str(conversation), seed=1, max_tokens=20)
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    # Everything up to the end of the first answer was evaluated already on this worker.
    assert cached >= first["usage"]["prompt_tokens"]
    assert cached < second["usage"]["prompt_tokens"]


@pytest.mark.stack
async def test_an_overlong_conversation_is_trimmed_oldest_first(
    owner: Any, second_model: Any, log_dir: Any
) -> None:
    worker = start_worker("small-context", log_dir, model=SECOND_MODEL, WIZ_MAX_CONTEXT="512")
    try:
        conversation = await Conversation.objects.acreate(owner=owner, title="long")
        parent = None
        for turn in range(6):
            role = Message.Role.USER if turn % 2 == 0 else Message.Role.ASSISTANT
            parent = await Message.objects.acreate(
                conversation=conversation,
                parent=parent,
                role=role,
                content=f"Turn {turn}: " + "the river flows to the sea " * 20,
            )
        done = await answer(
            owner, "Summarise.", str(conversation.id), model=SECOND_MODEL, max_tokens=64, seed=1
        )
    finally:
        worker.stop()
    assert done["finish_reason"] in ("stop", "length"), done
    assert done["trimmed"]["turns"] >= 2
    assert done["trimmed"]["tokens"] > 0
    assert done["usage"]["prompt_tokens"] + 64 <= 512


@pytest.mark.stack
async def test_a_single_prompt_too_long_for_the_context_fails_with_the_numbers(
    owner: Any, second_model: Any, log_dir: Any
) -> None:
    worker = start_worker("small-context", log_dir, model=SECOND_MODEL, WIZ_MAX_CONTEXT="256")
    try:
        done = await answer(owner, "word " * 600, model=SECOND_MODEL, max_tokens=16)
    finally:
        worker.stop()
    assert done["finish_reason"] == "error"
    assert "context holds 256" in done["error"]
    assert "shorten it by at least" in done["error"]


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "PST"]}},
            "required": ["zone"],
        },
    },
}


async def test_a_tool_call_comes_back_structured_with_auto(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    socket = await open_socket(owner)
    await socket.send_json_to(
        {
            "type": "prompt",
            "content": "What is the weather in Paris right now?",
            "options": {"tools": [WEATHER, TIME], "tool_choice": "auto", "seed": 1},
        }
    )
    frames = await frames_until_done(socket)
    await socket.disconnect()
    done = frames[-1]
    assert done["finish_reason"] == "tool_calls", done
    assert not [f for f in frames if f["type"] == "chunk"], "tool-call JSON is not streamed"
    assert done["content"] == ""
    (call,) = done["tool_calls"][:1]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"]["name"] in ("get_weather", "get_time")
    arguments = json.loads(call["function"]["arguments"])
    schema = WEATHER if call["function"]["name"] == "get_weather" else TIME
    jsonschema.validate(arguments, schema["function"]["parameters"])
    # Two passes (decide, then call) are both counted.
    assert done["usage"]["completion_tokens"] > 2
    message = await Message.objects.aget(pk=done["message"])
    assert message.tool_calls == done["tool_calls"]


async def test_a_named_function_is_always_called(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    done = await answer(
        owner,
        "Hello there!",
        seed=2,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert done["finish_reason"] == "tool_calls"
    assert {c["function"]["name"] for c in done["tool_calls"]} == {"get_time"}
    for call in done["tool_calls"]:
        assert json.loads(call["function"]["arguments"])["zone"] in ("UTC", "CET", "PST")


async def test_tool_choice_none_answers_in_text(
    owner: Any, default_model: Any, inference_worker: Any
) -> None:
    done = await answer(
        owner,
        "What is the weather in Paris?",
        seed=1,
        max_tokens=20,
        tools=[WEATHER],
        tool_choice="none",
    )
    assert done["finish_reason"] in ("stop", "length")
    assert done["content"]
    assert "tool_calls" not in done


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"tools": "get_weather"}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "tools"),
    ],
)
async def test_bad_tools_are_refused_before_anything_is_queued(
    owner: Any, default_model: Any, options: dict, key: str
) -> None:
    socket = await open_socket(owner)
    await socket.send_json_to({"type": "prompt", "content": "hi", "options": options})
    frame = await socket.receive_json_from(timeout=10)
    await socket.disconnect()
    assert frame["code"] == "invalid_options"
    assert frame["key"] == key
    assert not await Message.objects.aexists()
