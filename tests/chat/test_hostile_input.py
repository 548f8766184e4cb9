"""Generated hostile input (hypothesis) for the chat socket and `/v1/chat/completions`.

Every generated frame is wrong in some way, by construction, and must get an `error` frame on
a socket that stays open (a `ping` after it gets `pong`); every generated body must get a 400 in
OpenAI's error shape. Nothing may be logged as an error, saved or enqueued. No model is
registered: a frame or body that slipped through the checks would get `no_model` or a 404
instead of the error asserted (so the test fails) rather than being queued for a worker.
Examples are derandomized, so every run sends the same ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any

import django_rq
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings as django_settings
from django.db import connections
from django.test import Client
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chat.models import Conversation, Message
from chat.openai_api import IGNORED_KEYS, OPTION_KEYS
from chat.options import OPTION_KEYS as PARSED_KEYS
from tests.chat.socket_client import connect
from tests.conftest import session_cookie
from wizweb.apikeys import apikey_create

pytestmark = pytest.mark.django_db(transaction=True)

FUZZ = settings(
    derandomize=True,
    database=None,  # derandomized: the same examples every run, nothing to remember
    deadline=None,
    max_examples=150,  # was 250: 5 s more of the quick tier; the inputs that failed once are pinned
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# JSON values of every kind, kept small.
leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
not_none = json_values.filter(lambda v: v is not None)
not_a_string = not_none.filter(lambda v: not isinstance(v, str))
not_a_number = not_none.filter(lambda v: isinstance(v, bool) or not isinstance(v, int | float))


def _not_a_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return True
    return False


# --- Generation options, each set wrong in at least one entry -------------------------------

# Names the API reads or ignores (chat.openai_api).
GOOD_MESSAGE = {"role": "user", "content": "hi"}
UNSUPPORTED_KEYS = ("logprobs", "top_logprobs", "echo", "best_of", "suffix", "logit_bias")
HANDLED_KEYS = {"model", "stream", "stream_options", "messages", "n", "max_completion_tokens"}
ANY_KNOWN = PARSED_KEYS | OPTION_KEYS | IGNORED_KEYS | HANDLED_KEYS | set(UNSUPPORTED_KEYS)
# Where a number must fall (docs/protocol.md); anything outside is refused.
RANGES = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "min_p": (0, 1),
    "repeat_penalty": (0.5, 2),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
    "top_k": (0, 1000),
    "seed": (0, 2**31 - 1),
    "max_tokens": (1, 8192),
}
# Small schemas only: a schema asking for a billion characters is a limit of chat.options to
# come, not what this test looks for.
small_schema = st.fixed_dictionaries(
    {"type": st.sampled_from(["object", "string", "integer", "array", "boolean"])}
)
valid_tool = st.builds(
    lambda name: {"type": "function", "function": {"name": name, "parameters": {}}},
    st.text("abcdef_", min_size=1, max_size=6),
)


def _out_of_range(key: str) -> st.SearchStrategy[Any]:
    low, high = RANGES[key]
    return (
        not_a_number
        | st.floats(min_value=high, exclude_min=True, allow_nan=False, allow_infinity=False)
        | st.floats(max_value=low, exclude_max=True, allow_nan=False, allow_infinity=False)
        | st.integers(min_value=int(high) + 1)
        | st.integers(max_value=int(low) - 1 if low == int(low) else int(low))
    )


bad_option = st.one_of(
    st.tuples(st.text(min_size=1, max_size=12).filter(lambda k: k not in ANY_KNOWN), not_none),
    st.sampled_from(sorted(RANGES)).flatmap(lambda k: st.tuples(st.just(k), _out_of_range(k))),
    st.tuples(st.just("top_k"), st.floats(0.1, 999.9).filter(lambda f: not f.is_integer())),
    st.tuples(
        st.just("stop"),
        not_none.filter(lambda v: not isinstance(v, str | list))
        | st.lists(st.text(min_size=1, max_size=3), min_size=5, max_size=7)
        | st.lists(not_a_string | st.just(""), min_size=1, max_size=3),
    ),
    st.tuples(
        st.sampled_from(["model", "system_prompt", "response_prefix", "grammar"]), not_a_string
    ),
    st.tuples(st.just("model"), st.text(min_size=201, max_size=210)),
    st.tuples(
        st.just("priority"),
        st.just("high") | not_none.filter(lambda v: v not in ("high", "normal", "low")),
    ),
    st.tuples(
        st.just("response_format"),
        not_none.filter(lambda v: not isinstance(v, dict))
        | st.dictionaries(st.text(max_size=5).filter(lambda k: k != "type"), json_values)
        | st.fixed_dictionaries(
            {
                "type": st.text(max_size=8).filter(
                    lambda t: t not in {"text", "json_object", "json_schema"}
                )
            }
        )
        | st.fixed_dictionaries({"type": st.just("json_schema"), "json_schema": not_none}).filter(
            lambda v: (
                not (
                    isinstance(v["json_schema"], dict)
                    and isinstance(v["json_schema"].get("schema"), dict)
                )
            )
        ),
    ),
    st.tuples(
        st.just("tools"),
        not_none.filter(lambda v: not isinstance(v, list))
        | st.just([])
        | st.lists(valid_tool, min_size=33, max_size=33, unique_by=lambda t: t["function"]["name"])
        | st.lists(
            not_none.filter(lambda v: not isinstance(v, dict))
            | st.fixed_dictionaries({"type": st.text(max_size=5)}),
            min_size=1,
            max_size=2,
        ),
    ),
    st.tuples(st.just("tool_choice"), not_none.filter(lambda v: v != "none")),
)
valid_options = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.floats(0, 2),
        "seed": st.integers(0, 2**31 - 1),
        "max_tokens": st.integers(1, 100),
        "stop": st.lists(st.text(min_size=1, max_size=4), max_size=4),
        "response_format": st.just(
            {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
        ),
    },
)


@st.composite
def malformed_options(draw: st.DrawFn) -> Any:
    """An option set with at least one wrong entry, anywhere among right ones."""
    if draw(st.booleans()) and draw(st.booleans()):
        return draw(not_none.filter(lambda v: not isinstance(v, dict)))
    items = list(draw(valid_options).items())
    key, value = draw(bad_option)
    if key == "tool_choice":
        # Wrong without tools; with tools, wrong when it names none of them.
        items = [(k, v) for k, v in items if k not in ("tools", "response_format")]
        if draw(st.booleans()):
            tool = draw(valid_tool)
            items.append(("tools", [tool]))
            named = tool["function"]["name"]
            value = {
                "type": "function",
                "function": draw(
                    json_values.filter(
                        lambda f: not (isinstance(f, dict) and f.get("name") == named)
                    )
                ),
            }
    items = [(k, v) for k, v in items if k != key]
    items.insert(draw(st.integers(0, len(items))), (key, value))
    return dict(items)


# --- Frames for /ws/chat/, each one wrong --------------------------------------------------


def _not_a_frame_object(text: str) -> bool:
    try:
        return not isinstance(json.loads(text), dict)
    except ValueError:
        return True


lone_surrogate = st.integers(0xD800, 0xDFFF).map(lambda n: f"\\u{n:04x}")
uuid_text = st.uuids().map(str)
bad_uuid = not_none.filter(_not_a_uuid)


@st.composite
def hostile_text(draw: st.DrawFn) -> str:
    """Text that must come back as `invalid_json`: a good frame with one bad token in it."""
    kind = draw(st.sampled_from(["deep", "surrogate", "constant"]))
    if kind == "deep":
        # Past 64 levels, and past where json.loads itself gives up (about 1000).
        depth = draw(st.integers(65, 200) | st.integers(1000, 50_000))
        value = "[" * depth + "]" * depth
    elif kind == "surrogate":
        value = f'"hi {draw(lone_surrogate)}"'
    else:
        value = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]))
    where = draw(st.sampled_from(["client_id", "content", "options", "key"]))
    if where == "key":
        return f'{{"type": "prompt", "content": "hi", "{draw(lone_surrogate)}": 1}}'
    if where == "options":
        return f'{{"type": "prompt", "content": "hi", "options": {{"seed": {value}}}}}'
    return f'{{"type": "prompt", "content": "hi", "{where}": {value}}}'


def _frame(**fields: Any) -> str:
    return json.dumps(fields)


def expect(frames: st.SearchStrategy[Any], *codes: str) -> st.SearchStrategy[Any]:
    """Frames paired with the error codes any of them may be answered with."""
    return frames.map(lambda frame: (frame, set(codes)))


frames = st.one_of(
    # Not a frame at all.
    expect(st.text(max_size=40).filter(_not_a_frame_object), "invalid_json", "invalid_frame"),
    expect(st.binary(max_size=20), "invalid_frame"),
    expect(json_values.filter(lambda v: not isinstance(v, dict)).map(json.dumps), "invalid_frame"),
    expect(hostile_text(), "invalid_json"),
    # A type that is missing, not a string or unknown.
    expect(
        st.dictionaries(
            st.text(max_size=6).filter(lambda k: k != "type"), json_values, max_size=3
        ).map(json.dumps),
        "invalid_frame",
    ),
    expect(st.builds(lambda t: _frame(type=t), not_a_string | st.just("")), "invalid_frame"),
    expect(
        st.builds(
            lambda t: _frame(type=t),
            st.text(min_size=1, max_size=12).filter(
                lambda t: t not in {"ping", "prompt", "regenerate", "edit", "subscribe", "abort"}
            ),
        ),
        "unknown_type",
    ),
    # Known types with a wrong field.
    expect(
        st.builds(
            lambda c: _frame(type="prompt", content=c), not_a_string | st.text(" \t\n", max_size=4)
        ),
        "empty_prompt",
    ),
    expect(
        st.builds(
            lambda key, value: _frame(type="prompt", content="hi", **{key: value}),
            st.sampled_from(["conversation", "parent"]),
            bad_uuid,
        ),
        "invalid_frame",
    ),
    expect(
        st.builds(
            lambda t, m: _frame(type=t, message=m, content="hi"),
            st.sampled_from(["regenerate", "edit", "abort", "subscribe"]),
            bad_uuid,
        ),
        "invalid_frame",
    ),
    expect(
        st.builds(
            lambda t, m: _frame(type=t, message=m, content="hi"),
            st.sampled_from(["regenerate", "edit", "abort", "subscribe"]),
            uuid_text,  # names no message of this user
        ),
        "not_found",
    ),
    expect(
        st.builds(
            lambda m, after: _frame(type="subscribe", message=m, after=after),
            uuid_text,
            not_none.filter(lambda a: isinstance(a, bool) or not isinstance(a, int) or a < 0),
        ),
        "invalid_frame",
    ),
)
prompts_with_bad_options = st.builds(
    lambda options, client_id: _frame(
        type="prompt", content="hi", options=options, client_id=client_id
    ),
    malformed_options(),
    json_values,
)


# --- The socket, driven on an event loop of the test's own ---------------------------------


class SocketDriver:
    """Opens one socket per example in the same session, on one event loop for the whole test
    (hypothesis calls the test body synchronously)."""

    def __init__(self, cookie: str) -> None:
        self.cookie = cookie
        self.loop = asyncio.new_event_loop()

    def run(self, work: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(work)

    async def exchange(self, frame: str | bytes) -> dict[str, Any]:
        """The answer to `frame`, after checking that the socket still answers a ping."""
        socket = await connect(cookie=self.cookie)
        connected, _ = await socket.connect()
        assert connected
        # Not through send_to, which refuses an empty frame.
        kind = "bytes" if isinstance(frame, bytes) else "text"
        await socket.send_input({"type": "websocket.receive", kind: frame})
        answer: dict[str, Any] = await socket.receive_json_from(timeout=10)
        await socket.send_json_to({"type": "ping"})
        assert await socket.receive_json_from(timeout=10) == {"type": "pong"}
        await socket.disconnect()
        return answer

    def close(self) -> None:
        self.run(get_channel_layer().flush())
        self.run(sync_to_async(connections.close_all)())
        self.loop.close()


@pytest.fixture
def driver(owner: Any) -> Iterator[SocketDriver]:
    driver = SocketDriver(session_cookie(owner))
    yield driver
    driver.close()


def assert_nothing_kept(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert not Message.objects.exists() and not Conversation.objects.exists()
    for name in django_settings.GENERATION_QUEUES:
        assert django_rq.get_queue(name).count == 0


@FUZZ
@given(case=frames)
# Found before: each dropped the socket with a traceback.
@example(case=('{"type": "prompt", "content": "hi \\ud800"}', {"invalid_json"}))
@example(case=('{"type": "ping", "client_id": ' + "[" * 5000 + "]" * 5000 + "}", {"invalid_json"}))
def test_it_answers_every_malformed_frame_with_an_error_and_stays_open(
    driver: SocketDriver, caplog: pytest.LogCaptureFixture, case: tuple[str | bytes, set[str]]
) -> None:
    caplog.clear()
    frame, codes = case
    answer = driver.run(driver.exchange(frame))
    assert answer["type"] == "error" and answer["code"] in codes, (frame, answer)
    assert isinstance(answer["message"], str) and answer["message"].endswith((".", "?"))
    assert_nothing_kept(caplog)


TOOL_F = {"type": "function", "function": {"name": "f"}}


@FUZZ
@given(frame=prompts_with_bad_options)
# Found before: chat.tools called .get on a function given as a string.
@example(
    frame=_frame(
        type="prompt",
        content="hi",
        options={"tools": [TOOL_F], "tool_choice": {"type": "function", "function": "f"}},
        client_id=1,
    )
)
def test_it_refuses_every_malformed_option_set_before_saving_anything(
    driver: SocketDriver, caplog: pytest.LogCaptureFixture, frame: str
) -> None:
    caplog.clear()
    answer = driver.run(driver.exchange(frame))
    assert (answer["type"], answer["code"]) == ("error", "invalid_options"), (frame, answer)
    assert isinstance(answer["key"], str)
    assert answer.get("client_id") == json.loads(frame)["client_id"]
    assert_nothing_kept(caplog)


# --- /v1/chat/completions ------------------------------------------------------------------

GOOD_MESSAGE = {"role": "user", "content": "hi"}
UNSUPPORTED_KEYS = ("logprobs", "top_logprobs", "echo", "best_of", "suffix", "logit_bias")
HANDLED_KEYS = {"model", "stream", "stream_options", "messages", "n", "max_completion_tokens"}


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def hostile_arguments() -> st.SearchStrategy[str]:
    depths = st.integers(65, 200) | st.integers(1000, 50_000)
    return depths.map(lambda d: "[" * d + "]" * d) | lone_surrogate.map(
        lambda s: f'{{"city": "{s}"}}'
    )


bad_message = st.one_of(
    not_none.filter(lambda v: not isinstance(v, dict)),
    st.fixed_dictionaries(
        {"role": not_none.filter(lambda r: r not in ("system", "user", "assistant", "tool"))}
    ),
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "user", "assistant", "tool"]),
            "content": not_none.filter(lambda c: not isinstance(c, str | list)),
        }
    ),
    st.builds(
        lambda parts: {"role": "user", "content": parts},
        st.lists(
            not_none.filter(lambda p: not isinstance(p, dict))
            | st.fixed_dictionaries({"type": st.text(max_size=6).filter(lambda t: t != "text")})
            | st.fixed_dictionaries({"type": st.just("text"), "text": not_a_string}),
            min_size=1,
            max_size=2,
        ),
    ),
    st.builds(
        lambda calls: {"role": "assistant", "content": None, "tool_calls": calls},
        not_none.filter(lambda v: not isinstance(v, list))
        | st.lists(
            not_none.filter(lambda v: not isinstance(v, dict))
            | st.fixed_dictionaries(
                {"function": not_none.filter(lambda f: not isinstance(f, dict))}
            )
            | st.fixed_dictionaries(
                {"function": st.fixed_dictionaries({"name": not_a_string | st.just("")})}
            )
            | st.fixed_dictionaries(
                {
                    "function": st.fixed_dictionaries(
                        {
                            "name": st.just("f"),
                            "arguments": not_a_string
                            | st.text(max_size=8).filter(lambda a: a != "" and _not_json(a))
                            | hostile_arguments(),
                        }
                    )
                }
            ),
            min_size=1,
            max_size=2,
        ),
    ),
)


@st.composite
def malformed_bodies(draw: st.DrawFn) -> str:
    body: dict[str, Any] = {"model": "m", "messages": [GOOD_MESSAGE]}
    kind = draw(
        st.sampled_from(
            [
                "raw",
                "model",
                "messages",
                "message",
                "unknown",
                "n",
                "unsupported",
                "option",
                "stream",
                "stream_options",
                "hostile",
            ]
        )
    )
    if kind == "raw":
        return draw(st.text(max_size=40).filter(_not_a_frame_object))
    if kind == "hostile":
        return draw(hostile_text()).replace('"type": "prompt", "content": "hi"', '"model": "m"')
    if kind == "model":
        if draw(st.booleans()):
            del body["model"]
        else:
            body["model"] = draw(not_a_string | st.just(""))
    elif kind == "messages":
        body["messages"] = draw(not_none.filter(lambda v: not isinstance(v, list)) | st.just([]))
    elif kind == "message":
        messages = [GOOD_MESSAGE] * draw(st.integers(0, 2))
        messages.insert(draw(st.integers(0, len(messages))), draw(bad_message))
        body["messages"] = messages
    elif kind == "unknown":
        name = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in ANY_KNOWN))
        body[name] = draw(json_values)
    elif kind == "n":
        body["n"] = draw(json_values.filter(lambda v: v not in (None, 1)))
    elif kind == "unsupported":
        body[draw(st.sampled_from(UNSUPPORTED_KEYS))] = draw(
            json_values.filter(lambda v: v not in (None, False, 0, 1, {}))
        )
    elif kind == "option":
        # Every one is a 400 here too: as a bad value, or as a parameter the API does not take.
        key, value = draw(bad_option)
        body[key] = value
    elif kind == "stream":
        body["stream"] = draw(not_none.filter(lambda v: not isinstance(v, bool)))
    else:
        body["stream"] = True
        body["stream_options"] = draw(
            st.fixed_dictionaries(
                {"include_usage": not_none.filter(lambda v: not isinstance(v, bool))}
            )
            | not_none.filter(lambda v: not isinstance(v, dict) and bool(v))
        )
    return json.dumps(body)


@pytest.fixture
def api_client(owner: Any) -> Client:
    secret = apikey_create(user=owner, name="fuzz").secret
    return Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {secret}")


@FUZZ
@given(body=malformed_bodies())
# Found before: each was a 500 from _turns.
@example(body='{"model": "m", "messages": [{"role": "assistant", "tool_calls": "f()"}]}')
@example(body='{"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": 1}]}]}')
@example(body='{"model": "m", "messages": [{"role": ["user"], "content": "hi"}]}')
def test_it_answers_every_malformed_chat_completion_with_a_400(
    api_client: Client, caplog: pytest.LogCaptureFixture, body: str
) -> None:
    caplog.clear()
    response = api_client.post("/v1/chat/completions", body, content_type="application/json")
    assert response.status_code == 400, (body, response.content[:300])
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str) and error["message"]
    assert_nothing_kept(caplog)
