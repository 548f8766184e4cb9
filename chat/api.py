"""The JSON API of a user's own history: `/api/conversations/`, one conversation, its export.

Session or API-key auth; another user's conversation is a 404, like a missing one."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import User
from django.core.paginator import EmptyPage, Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from chat import conversations, errors, selectors
from chat.attachments import message_frames
from chat.frames import broadcast
from chat.models import Conversation, ConversationShare, Message, SystemPromptPreset
from chat.options import InvalidOptions
from wizweb.apikeys import apikey_from_request
from wizweb.untrusted_json import UntrustedJSONError, untrusted_json_parse

# The chat page's sidebar loads its later pages from here, so both use one page size.
PAGE_SIZE = selectors.SIDEBAR_PAGE


def _api_error(status: int, message: str, code: str) -> JsonResponse:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    return JsonResponse(body, status=status)


def api_user_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The logged-in user, or the owner of the request's API key; 401 in JSON otherwise."""

    @login_not_required
    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        if user.is_authenticated and request.method not in ("GET", "HEAD", "OPTIONS"):
            # A browser's session may change things only with the page's CSRF token.
            refused = CsrfViewMiddleware(lambda r: HttpResponse()).process_view(
                request, view, (), {}
            )
            if refused is not None:
                return _api_error(403, "Send the page's CSRF token (X-CSRFToken).", "csrf")
        if not user.is_authenticated:
            api_key = apikey_from_request(request)
            if api_key is None:
                return _api_error(
                    401, "Log in, or send 'Authorization: Bearer <key>'.", "invalid_api_key"
                )
            user = api_key.user
        try:
            return view(request, user, *args, **kwargs)
        except Http404:
            return _api_error(404, "That conversation does not exist or is not yours.", "not_found")
        except UntrustedJSONError as exc:
            return _api_error(400, str(exc), "invalid_json")

    return wrapper


def conversation_summary(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.id),
        "title": conversation.title,
        "settings": conversation.settings,
        "pinned": conversation.pinned,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
    }


def conversation_export(conversation: Conversation) -> dict[str, Any]:
    messages = selectors.conversation_messages(conversation=conversation)
    frames = message_frames(messages, owner=conversation.owner)
    return {**conversation_summary(conversation), "messages": frames}


def conversation_markdown(conversation: Conversation) -> str:
    lines = [f"# {conversation.title or 'Conversation'}", ""]
    for message in selectors.conversation_messages(conversation=conversation):
        who = {"user": "You", "assistant": f"Assistant ({message.model_name or 'model'})"}.get(
            message.role, message.role.capitalize()
        )
        lines += [f"**{who}:**", ""]
        if message.reasoning:
            # Folded, as the chat page shows it; a blank line lets its markdown render inside.
            lines += [
                "<details><summary>Thinking</summary>",
                "",
                message.reasoning,
                "",
                "</details>",
                "",
            ]
        lines += [message.content or "", ""]
        if message.tool_calls:
            lines += ["```json", json.dumps(message.tool_calls, indent=2), "```", ""]
        if message.state == Message.State.FAILED:
            lines += [f"_(failed: {message.error})_", ""]
    return "\n".join(lines)


@require_http_methods(["GET", "POST"])
@api_user_required
def conversation_list(request: HttpRequest, user: User) -> HttpResponse:
    if request.method == "POST":
        return _conversation_import(request, user)
    search = request.GET.get("q", "").strip()[:200]
    paginator = Paginator(selectors.conversation_list(user=user, search=search), PAGE_SIZE)
    try:
        number = int(request.GET.get("page", "1"))
        page = paginator.page(number)
    except (ValueError, EmptyPage):
        return _api_error(
            400, f"'page' must be between 1 and {paginator.num_pages}.", "invalid_page"
        )
    return JsonResponse(
        {
            "count": paginator.count,
            "page": page.number,
            "pages": paginator.num_pages,
            "next": f"?page={page.next_page_number()}" if page.has_next() else None,
            "previous": f"?page={page.previous_page_number()}" if page.has_previous() else None,
            "results": [conversation_summary(c) for c in page.object_list],
        }
    )


@require_http_methods(["GET", "PATCH", "DELETE"])
@api_user_required
def conversation_detail(
    request: HttpRequest, user: User, conversation_id: uuid.UUID
) -> HttpResponse:
    conversation = selectors.conversation_get(user=user, conversation_id=conversation_id)
    if request.method == "DELETE":
        deleted = conversations.conversation_delete(conversation=conversation)
        transaction.on_commit(lambda: broadcast(deleted))
        return HttpResponse(status=204)
    if request.method == "PATCH":
        body = _json_body(request)
        if "title" in body:
            title = body["title"]
            if not isinstance(title, str) or not title.strip() or len(title) > 200:
                return _api_error(400, "'title' must be 1 to 200 characters.", "invalid_title")
            broadcast(conversations.conversation_rename(conversation=conversation, title=title))
        if "pinned" in body:
            if not isinstance(body["pinned"], bool):
                return _api_error(400, "'pinned' must be true or false.", "invalid_pinned")
            conversations.conversation_pin(conversation=conversation, pinned=body["pinned"])
        if "settings" in body:
            if not isinstance(body["settings"], dict):
                return _api_error(400, "'settings' must be an object.", "invalid_settings")
            try:
                conversations.conversation_settings_update(
                    conversation=conversation, values=body["settings"]
                )
            except InvalidOptions as exc:
                return _api_error(400, str(exc), "invalid_options")
    return JsonResponse(conversation_export(conversation))


@require_http_methods(["GET", "PUT", "DELETE"])
@api_user_required
def conversation_share(
    request: HttpRequest, user: User, conversation_id: uuid.UUID
) -> HttpResponse:
    """The conversation's read-only link: who sees it (GET), share or change that (PUT), revoke
    it (DELETE)."""
    conversation = selectors.conversation_get(user=user, conversation_id=conversation_id)
    if request.method == "DELETE":
        conversations.conversation_unshare(conversation=conversation)
        return HttpResponse(status=204)
    if request.method == "PUT":
        body = _json_body(request)
        everyone = body.get("everyone", False)
        usernames = body.get("users", [])
        if not isinstance(everyone, bool) or not (
            isinstance(usernames, list) and all(isinstance(u, str) for u in usernames)
        ):
            return _api_error(
                400,
                "'everyone' must be true or false and 'users' a list of names.",
                "invalid_share",
            )
        try:
            share = conversations.conversation_share(
                conversation=conversation, everyone=everyone, usernames=usernames
            )
        except errors.ChatError as exc:
            return _api_error(400, str(exc), exc.code)
        return JsonResponse(share.as_json())
    current = ConversationShare.objects.filter(conversation=conversation).first()
    if current is None:
        return _api_error(404, "This conversation is not shared.", "not_shared")
    return JsonResponse(current.as_json())


def _json_object(raw: bytes) -> dict[str, Any]:
    """The request's JSON object; UntrustedJSONError (a 400 `invalid_json`) otherwise."""
    body = untrusted_json_parse(raw or b"{}")
    if not isinstance(body, dict):
        raise UntrustedJSONError("The request body must be a JSON object.")
    return body


def _json_body(request: HttpRequest) -> dict[str, Any]:
    return _json_object(request.body)


# An export is one JSON document, often larger than the 2.5 MB Django allows a request body
# (DATA_UPLOAD_MAX_MEMORY_SIZE, which is meant for forms), so an import reads its own.
MAX_IMPORT_BYTES = 32 * 1024 * 1024


def _conversation_import(request: HttpRequest, user: User) -> HttpResponse:
    length = int(request.META.get("CONTENT_LENGTH") or 0)
    if length > MAX_IMPORT_BYTES:
        return _api_error(
            413,
            f"The file is {length / 2**20:.1f} MB; an import can be at most "
            f"{MAX_IMPORT_BYTES // 2**20} MB.",
            "import_too_large",
        )
    data = _json_object(request.read(MAX_IMPORT_BYTES))
    try:
        conversation = conversations.conversation_import(user=user, data=data)
    except errors.ChatError as exc:
        return _api_error(400, str(exc), exc.code)
    return JsonResponse(conversation_export(conversation), status=201)


@require_GET
@api_user_required
def conversation_download(
    request: HttpRequest, user: User, conversation_id: uuid.UUID
) -> HttpResponse:
    conversation = selectors.conversation_get(user=user, conversation_id=conversation_id)
    kind = request.GET.get("format", "json")
    stem = f"conversation-{conversation.id}"
    if kind == "md":
        response = HttpResponse(
            conversation_markdown(conversation), content_type="text/markdown; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="{stem}.md"'
    elif kind == "json":
        response = JsonResponse(conversation_export(conversation), json_dumps_params={"indent": 2})
        response["Content-Disposition"] = f'attachment; filename="{stem}.json"'
    else:
        return _api_error(400, "'format' must be md or json.", "invalid_format")
    return response


@require_http_methods(["GET", "POST"])
@api_user_required
def preset_list(request: HttpRequest, user: User) -> HttpResponse:
    if request.method == "POST":
        body = _json_body(request)
        try:
            preset = conversations.preset_save(
                user=user, name=str(body.get("name") or ""), text=str(body.get("text") or "")
            )
        except errors.ChatError as exc:
            return _api_error(400, str(exc), exc.code)
        return JsonResponse(preset.as_json(), status=201)
    presets = SystemPromptPreset.objects.filter(owner=user)
    return JsonResponse({"results": [p.as_json() for p in presets]})


@require_http_methods(["PATCH", "DELETE"])
@api_user_required
def preset_detail(request: HttpRequest, user: User, preset_id: int) -> HttpResponse:
    if request.method == "PATCH":
        body = _json_body(request)
        if not isinstance(body.get("default"), bool):
            return _api_error(400, "'default' must be true or false.", "invalid_preset")
        try:
            preset = conversations.preset_default_set(
                user=user, preset_id=preset_id, default=body["default"]
            )
        except errors.ChatError as exc:
            return _api_error(404 if exc.code == "not_found" else 400, str(exc), exc.code)
        return JsonResponse(preset.as_json())
    deleted, _ = SystemPromptPreset.objects.filter(owner=user, pk=preset_id).delete()
    if not deleted:
        return _api_error(404, "That preset does not exist or is not yours.", "not_found")
    return HttpResponse(status=204)
