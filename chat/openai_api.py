"""OpenAI-compatible endpoints: `/v1/models`, `/v1/chat/completions`, `/v1/completions`.

They reach the same queue, priorities and workers as the chat page: a request becomes a
conversation and a queued assistant message (chat.submission.api_request_submit), and the view
follows that message's frames (chat.follow) into OpenAI's response or server-sent events. A
client that goes away stops its generation, so the worker is free for the next request.
docs/api.md is the contract.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from chat import conversations, errors, options, queue, submission
from chat.attachments import Attachments, attachments_parse
from chat.follow import message_follow
from chat.models import Message
from chat.options import OPTION_KEYS as PARSED_KEYS
from chat.options import GenerationOptions, InvalidOptions, options_parse
from models_admin.access import models_usable_by
from wizweb.apikeys import apikey_from_request
from wizweb.models import ApiKey
from wizweb.untrusted_json import UntrustedJSONError, untrusted_json_parse

# Our generation options, under their OpenAI names (and our extensions): the model is the
# request's own field, and a system prompt comes as a message.
OPTION_KEYS = PARSED_KEYS - {"model", "system_prompt"}
# Our other extension: documents and collections the last user turn attaches (chat.grounding);
# not options, since they are checked against the user's files, not parsed.
ATTACHMENT_KEYS = {"documents", "collections"}
# OpenAI parameters that change nothing here; clients send them routinely.
IGNORED_KEYS = {"user", "parallel_tool_calls", "store", "metadata", "service_tier"}
ROLES = {"system", "user", "assistant", "tool"}
RETRY_AFTER_SECONDS = 5
# Each becomes a row, and the worker trims what does not fit; the same bound as an import.
MAX_MESSAGES = conversations.MAX_IMPORT_MESSAGES


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: int = RETRY_AFTER_SECONDS,
    ) -> None:
        self.status, self.type, self.param, self.code = status, type, param, code
        self.retry_after = retry_after
        super().__init__(message)

    def response(self) -> JsonResponse:
        body = {
            "error": {
                "message": str(self),
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        response = JsonResponse(body, status=self.status)
        if self.status == 429:
            response["Retry-After"] = str(self.retry_after)
        return response


def _chat_error(exc: errors.ChatError) -> ApiError:
    if exc.code == "quota_exceeded":
        return ApiError(
            429, str(exc), type="rate_limit_error", code=exc.code, retry_after=exc.retry_after or 60
        )
    if exc.code == "too_many_pending":
        return ApiError(429, str(exc), type="rate_limit_error", code=exc.code)
    if exc.code in ("model_not_found", "no_model"):
        return ApiError(404, str(exc), param="model", code="model_not_found")
    if exc.code == "not_found":
        return ApiError(404, str(exc), code=exc.code)
    return ApiError(400, str(exc), code=exc.code)


async def _api_key(request: HttpRequest) -> ApiKey:
    api_key = await database_sync_to_async(apikey_from_request)(request)
    if api_key is None:
        raise ApiError(
            401,
            "Missing, unknown or revoked API key: send 'Authorization: Bearer <key>'; "
            "create a key at /account/keys/.",
            code="invalid_api_key",
        )
    return api_key


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = untrusted_json_parse(request.body or b"{}")
    except UntrustedJSONError as exc:
        raise ApiError(400, str(exc), code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise ApiError(
            400, "'model' is required: one of the ids from GET /v1/models.", param="model"
        )
    return body


async def _options(body: dict[str, Any], api_key: ApiKey, handled: set[str]) -> GenerationOptions:
    raw: dict[str, Any] = {"model": body["model"]}
    for key, value in body.items():
        if key in handled or key in IGNORED_KEYS:
            continue
        if key == "max_completion_tokens":
            raw["max_tokens"] = value
        elif key in OPTION_KEYS:
            raw[key] = value
        elif key == "n":
            if value not in (None, 1):
                raise ApiError(400, "Only one choice per request is supported (n=1).", param="n")
        elif key in ("logprobs", "top_logprobs", "echo", "best_of", "suffix", "logit_bias"):
            if value not in (None, False, 0, 1, {}):
                raise ApiError(400, f"'{key}' is not supported.", param=key)
        else:
            raise ApiError(400, f"Unknown parameter '{key}'.", param=key, code="unknown_parameter")
    try:
        # Turning a JSON schema into a grammar can take seconds: in a thread of its own, so
        # daphne's event loop keeps serving every other request meanwhile. No database here.
        return await sync_to_async(options_parse, thread_sensitive=False)(
            raw, max_priority=options.max_priority_for(api_key.user)
        )
    except InvalidOptions as exc:
        raise ApiError(400, str(exc), param=exc.key) from None


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for number, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ApiError(
                    400,
                    'Only text content parts ({"type": "text", "text": "..."}) are supported.',
                    param=f"{where}[{number}]",
                )
            text = part.get("text", "")
            if not isinstance(text, str):
                raise ApiError(
                    400, "A text part's text must be a string.", param=f"{where}[{number}].text"
                )
            parts.append(text)
        return "".join(parts)
    raise ApiError(
        400, "A message's content must be a string or a list of text parts.", param=where
    )


def _tool_call(call: Any, where: str) -> dict[str, Any]:
    """One call of an earlier answer, as our call pass writes it: {"name", "arguments"}."""
    if not isinstance(call, dict):
        raise ApiError(400, 'A tool call must be an object with a "function".', param=where)
    function = call.get("function")
    if not isinstance(function, dict):
        raise ApiError(
            400,
            'A tool call needs "function": {"name": ..., "arguments": "<JSON>"}.',
            param=f"{where}.function",
        )
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError(
            400, "A tool call's function name must be a string.", param=f"{where}.function.name"
        )
    arguments = function.get("arguments")
    if arguments is None or arguments == "":
        arguments = "{}"
    if not isinstance(arguments, str):
        raise ApiError(
            400,
            "A tool call's arguments must be a string of JSON, as the API returned them.",
            param=f"{where}.function.arguments",
        )
    try:
        value = untrusted_json_parse(arguments)
    except UntrustedJSONError as exc:
        raise ApiError(
            400,
            f"A tool call's arguments must be a string of JSON. {exc}",
            param=f"{where}.function.arguments",
        ) from None
    return {"name": name, "arguments": value}


def _turns(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list.", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise ApiError(
            400,
            f"'messages' holds {len(messages)} messages; the limit is {MAX_MESSAGES}. "
            "Leave out the oldest turns: a model's context holds far fewer anyway.",
            param="messages",
        )
    turns = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(role, str) or role not in ROLES:
            raise ApiError(
                400,
                "Each message needs a role: system, user, assistant or tool.",
                param=f"{where}.role",
            )
        text = _content_text(message.get("content"), f"{where}.content")
        tool_calls = message.get("tool_calls")
        if role == "assistant" and tool_calls is not None:
            if not isinstance(tool_calls, list):
                raise ApiError(
                    400, "'tool_calls' must be a list of tool calls.", param=f"{where}.tool_calls"
                )
            # Shown to the model the way our call pass writes calls (chat.tools).
            calls = [
                _tool_call(call, f"{where}.tool_calls[{number}]")
                for number, call in enumerate(tool_calls)
            ]
            if calls:
                text = text or json.dumps(calls, ensure_ascii=False)
        turns.append({"role": role, "content": text})
    return turns


def _stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    """Whether to stream, and whether to end the stream with a usage chunk."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false.", param="stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict) or not isinstance(
        stream_options.get("include_usage"), bool | None
    ):
        raise ApiError(
            400,
            "'stream_options' must be an object such as {\"include_usage\": true}.",
            param="stream_options",
        )
    return bool(stream), bool(stream_options.get("include_usage"))


def _attachments(body: dict[str, Any], turns: list[dict[str, str]]) -> Attachments:
    try:
        attachments = attachments_parse(body.get("documents"), body.get("collections"))
    except errors.ChatError as exc:
        raise ApiError(400, str(exc), code=exc.code) from None
    if attachments and not any(t["role"] == "user" for t in turns):
        raise ApiError(
            400, "Documents and collections go with a user message; send one.", param="messages"
        )
    return attachments


async def _submit(
    api_key: ApiKey,
    turns: list[dict[str, str]],
    options: GenerationOptions,
    mode: str,
    attachments: Attachments,
) -> Message:
    try:
        return await database_sync_to_async(submission.api_request_submit)(
            user=api_key.user,
            turns=turns,
            options=options,
            mode=mode,
            in_history=api_key.keep_history,
            attachments=attachments,
        )
    except errors.ChatError as exc:
        raise _chat_error(exc) from None
    except InvalidOptions as exc:  # an option this model cannot honour
        raise ApiError(400, str(exc), param=exc.key) from None


async def _frames(message: Message, api_key: ApiKey) -> AsyncIterator[Mapping[str, Any]]:
    """The message's frames; if the client goes away first, its generation is stopped."""
    finished = False
    try:
        async for frame in message_follow(message.id):
            if frame["type"] == "done":
                finished = True
            yield frame
    finally:
        if not finished:
            await asyncio.shield(
                database_sync_to_async(queue.message_abort)(
                    user=api_key.user, message_id=message.id
                )
            )
        await database_sync_to_async(submission.api_conversation_discard)(message=message)


def _finish_reason(done: Mapping[str, Any]) -> str:
    reason = str(done["finish_reason"])
    return "stop" if reason == "aborted" else reason


def _usage(done: Mapping[str, Any]) -> dict[str, Any] | None:
    return done.get("usage")


def _sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def _error_payload(done: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "error": {
            "message": done.get("error") or "The generation failed.",
            "type": "server_error",
            "param": None,
            "code": "generation_failed",
        }
    }


class _Stream:
    """OpenAI's shapes for one request, chat or text completion."""

    def __init__(self, message: Message, model: str, *, chat: bool) -> None:
        self.chat = chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{message.id.hex}"
        self.model = model
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"

    def _base(self, suffix: str = "") -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object + suffix,
            "created": self.created,
            "model": self.model,
        }

    def chunk(
        self,
        *,
        text: str | None = None,
        reasoning: str | None = None,
        role: bool = False,
        tool_calls: list[dict[str, Any]] | None = None,
        finish_reason: str | None = None,
    ) -> dict[str, Any]:
        if not self.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "text": text or "",
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            return {**self._base(), "choices": [choice]}
        delta: dict[str, Any] = {}
        if role:
            delta.update(role="assistant", content="")
        if text is not None:
            delta["content"] = text
        if reasoning is not None:
            delta["reasoning_content"] = reasoning  # as llama-server and DeepSeek's API
        if tool_calls:
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(tool_calls)]
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**self._base(".chunk"), "choices": [choice]}

    def usage_chunk(
        self, usage: dict[str, Any] | None, citations: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        suffix = ".chunk" if self.chat else ""
        chunk = {**self._base(suffix), "choices": [], "usage": usage}
        if self.chat and citations is not None:
            chunk["citations"] = citations
        return chunk

    def whole(self, done: Mapping[str, Any]) -> dict[str, Any]:
        if self.chat:
            answer: dict[str, Any] = {"role": "assistant", "content": done["content"] or None}
            if done.get("reasoning"):
                answer["reasoning_content"] = done["reasoning"]
            if done.get("tool_calls"):
                answer["tool_calls"] = done["tool_calls"]
            choice: dict[str, Any] = {
                "index": 0,
                "message": answer,
                "logprobs": None,
                "finish_reason": _finish_reason(done),
            }
        else:
            choice = {
                "index": 0,
                "text": done["content"],
                "logprobs": None,
                "finish_reason": _finish_reason(done),
            }
        whole = {**self._base(), "choices": [choice], "usage": _usage(done)}
        if self.chat:
            whole["citations"] = done.get("citations", [])
        return whole


async def _events(
    message: Message, api_key: ApiKey, shape: _Stream, include_usage: bool
) -> AsyncIterator[str]:
    if shape.chat:
        yield _sse(shape.chunk(role=True))
    async for frame in _frames(message, api_key):
        if frame["type"] == "chunk":
            if frame.get("channel") == "reasoning":
                if shape.chat:  # a text completion has no template, so no thinking
                    yield _sse(shape.chunk(reasoning=frame["text"]))
            else:
                yield _sse(shape.chunk(text=frame["text"]))
        elif frame["type"] == "done":
            if frame["finish_reason"] == "error":
                yield _sse(_error_payload(frame))
            else:
                # The sources ride on the chunk that ends the answer, and on the usage chunk
                # after it when asked for: either way on the last chunk.
                last = shape.chunk(
                    tool_calls=frame.get("tool_calls"), finish_reason=_finish_reason(frame)
                )
                if shape.chat:
                    last["citations"] = frame.get("citations", [])
                yield _sse(last)
                if include_usage:
                    yield _sse(shape.usage_chunk(_usage(frame), frame.get("citations", [])))
    yield _sse("[DONE]")


async def _respond(request: HttpRequest, *, chat: bool) -> HttpResponse | StreamingHttpResponse:
    api_key = await _api_key(request)
    body = _body(request)
    handled = {"model", "stream", "stream_options", "messages" if chat else "prompt"}
    if chat:
        handled |= ATTACHMENT_KEYS
    options = await _options(body, api_key, handled)
    attachments = Attachments()
    if chat:
        turns = _turns(body.get("messages"))
        attachments = _attachments(body, turns)
        mode = Message.Mode.CHAT
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise ApiError(400, "'prompt' must be a non-empty string.", param="prompt")
        if options.tools is not None:
            raise ApiError(400, "Tools need /v1/chat/completions.", param="tools")
        turns = [{"role": "user", "content": prompt}]
        mode = Message.Mode.COMPLETION
    stream, include_usage = _stream_flags(body)
    message = await _submit(api_key, turns, options, mode, attachments)
    shape = _Stream(message, message.model_name, chat=chat)
    if stream:
        response = StreamingHttpResponse(
            _events(message, api_key, shape, include_usage), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    done: Mapping[str, Any] = {}
    async for frame in _frames(message, api_key):
        if frame["type"] == "done":
            done = frame
    if done.get("finish_reason") == "error":
        return JsonResponse(_error_payload(done), status=500)
    return JsonResponse(shape.whole(done))


def _completion_view(*, chat: bool) -> Callable[..., Coroutine[Any, Any, HttpResponseBase]]:
    @csrf_exempt
    @login_not_required
    @require_POST
    async def view(request: HttpRequest) -> HttpResponseBase:
        try:
            return await _respond(request, chat=chat)
        except ApiError as exc:
            return exc.response()

    return view


chat_completions = _completion_view(chat=True)
completions = _completion_view(chat=False)


def _models_list(user: User) -> list[dict[str, Any]]:
    return [
        {
            "id": m.name,
            "object": "model",
            "created": int(m.created_at.timestamp()),
            "owned_by": "wizweb",
        }
        for m in models_usable_by(user)
    ]


@csrf_exempt
@login_not_required
@require_GET
async def models(request: HttpRequest) -> HttpResponse:
    try:
        api_key = await _api_key(request)
    except ApiError as exc:
        return exc.response()
    data = await database_sync_to_async(_models_list)(api_key.user)
    return JsonResponse({"object": "list", "data": data})
