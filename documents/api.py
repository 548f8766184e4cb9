"""The JSON API of collections and documents: `/api/collections/`, `/api/documents/`,
`/api/search/` (docs/api.md, "Documents API").

Session or API-key auth, as for conversations. What a user may not read answers 404 like a
missing id; what they may read but not change (a collection shared with them) answers 403."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from django.contrib.auth.models import User
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET, require_http_methods

from chat.api import api_user_required
from documents import selectors, services
from documents.detection import DocumentRefused
from documents.models import Collection, Document
from wizweb.untrusted_json import UntrustedJSONError, untrusted_json_parse

# Room for the multipart envelope around the file itself.
MULTIPART_SLACK = 64 * 1024
STATUS = {"file_too_large": 413, "quota_exceeded": 413, "disk_full": 507}
DOWNLOAD_TYPES: dict[str, str] = {
    Document.Kind.PDF: "application/pdf",
    Document.Kind.DOCX: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


def _api_error(status: int, message: str, code: str) -> JsonResponse:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    return JsonResponse(body, status=status)


def documents_api(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """chat's API auth (session with CSRF, or API key) and this app's errors as JSON."""

    @wraps(view)
    def wrapper(request: HttpRequest, user: User, *args: Any, **kw: Any) -> HttpResponse:
        try:
            return view(request, user, *args, **kw)
        except Http404:
            return _api_error(
                404,
                "That collection or document does not exist, or is not shared with you.",
                "not_found",
            )
        except services.NotOwner as exc:
            return _api_error(403, str(exc), "not_owner")
        except DocumentRefused as exc:
            return _api_error(STATUS.get(exc.code, 400), str(exc), exc.code)
        except UntrustedJSONError as exc:
            return _api_error(400, str(exc), "invalid_json")

    return api_user_required(wrapper)


def _json_object(request: HttpRequest) -> dict[str, Any]:
    body = untrusted_json_parse(request.body or b"{}")
    if not isinstance(body, dict):
        raise UntrustedJSONError("The request body must be a JSON object.")
    return body


def collection_json(collection: Collection, user: User) -> dict[str, Any]:
    return {
        "id": collection.pk,
        "name": collection.name,
        "owner": collection.owner.get_username(),
        "mine": collection.owner_id == user.pk,
        "shared": {
            "everyone": collection.shared_with_everyone,
            "groups": sorted(g.name for g in collection.shared_groups.all()),
        },
        "created_at": collection.created_at.isoformat(),
        "updated_at": collection.updated_at.isoformat(),
    }


@require_http_methods(["GET", "POST"])
@documents_api
def collection_list(request: HttpRequest, user: User) -> HttpResponse:
    if request.method == "POST":
        body = _json_object(request)
        name = body.get("name")
        if not isinstance(name, str):
            raise DocumentRefused("'name' must be a string.", "invalid_name")
        collection = services.collection_create(user=user, name=name)
        return JsonResponse(collection_json(collection, user), status=201)
    collections = (
        selectors.collections_readable_by(user)
        .select_related("owner")
        .prefetch_related("shared_groups")
    )
    return JsonResponse({"results": [collection_json(c, user) for c in collections]})


@require_http_methods(["GET", "PATCH", "DELETE"])
@documents_api
def collection_detail(request: HttpRequest, user: User, collection_id: int) -> HttpResponse:
    collection = selectors.collection_get(user=user, collection_id=collection_id)
    if request.method == "DELETE":
        services.collection_delete(user=user, collection=collection)
        return HttpResponse(status=204)
    if request.method == "PATCH":
        body = _json_object(request)
        if "name" in body:
            if not isinstance(body["name"], str):
                raise DocumentRefused("'name' must be a string.", "invalid_name")
            services.collection_rename(user=user, collection=collection, name=body["name"])
        if "share" in body:
            share = body["share"]
            everyone = share.get("everyone", False) if isinstance(share, dict) else None
            groups = share.get("groups", []) if isinstance(share, dict) else None
            if not isinstance(everyone, bool) or not (
                isinstance(groups, list) and all(isinstance(g, str) for g in groups)
            ):
                raise DocumentRefused(
                    '\'share\' must be {"everyone": true or false, "groups": [names]}.',
                    "invalid_share",
                )
            services.collection_share(
                user=user, collection=collection, everyone=everyone, groups=groups
            )
    documents = selectors.collection_documents(collection=collection)
    return JsonResponse(
        {**collection_json(collection, user), "documents": [d.as_json() for d in documents]}
    )


def refuse_large_bodies(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """413 before anything reads the body (the CSRF check of a session reads a form's fields,
    which would spool the whole upload to disk) when it says it is larger than a file may be."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        too_large = services.upload_too_large(max(length - MULTIPART_SLACK, 0))
        if request.method == "POST" and too_large:
            return _api_error(413, too_large, "file_too_large")
        return view(request, *args, **kwargs)

    return wrapper


@refuse_large_bodies
@require_http_methods(["GET", "POST"])
@documents_api
def collection_documents(request: HttpRequest, user: User, collection_id: int) -> HttpResponse:
    collection = selectors.collection_get(user=user, collection_id=collection_id)
    if request.method == "POST":
        return JsonResponse(_uploaded(request, user, collection).as_json(), status=201)
    documents = selectors.collection_documents(collection=collection)
    return JsonResponse({"results": [d.as_json() for d in documents]})


def _uploaded(request: HttpRequest, user: User, collection: Collection | None) -> Document:
    upload = request.FILES.get("file")
    if upload is None:
        raise DocumentRefused(
            "Send the file as multipart/form-data in a field named 'file'.", "no_file"
        )
    return services.document_upload(user=user, collection=collection, upload=upload)


@refuse_large_bodies
@require_http_methods(["POST"])
@documents_api
def document_list(request: HttpRequest, user: User) -> HttpResponse:
    """A loose file, in no collection, to attach to a chat turn. (A stand-in for helper A's
    fuller endpoint of the same name: the lead keeps theirs at merge.)"""
    return JsonResponse(_uploaded(request, user, None).as_json(), status=201)


@require_http_methods(["GET", "DELETE"])
@documents_api
def document_detail(request: HttpRequest, user: User, document_id: int) -> HttpResponse:
    document = selectors.document_get(user=user, document_id=document_id)
    if request.method == "DELETE":
        services.document_delete(user=user, document=document)
        return HttpResponse(status=204)
    return JsonResponse(document.as_json())


@require_GET
@documents_api
def document_file(request: HttpRequest, user: User, document_id: int) -> HttpResponse:
    """The original file, as a download (never shown inline: an uploaded HTML page must not
    run as one of ours)."""
    document = selectors.document_get(user=user, document_id=document_id)
    if not document.path.exists():
        raise Http404("The file is gone.")
    response = FileResponse(
        document.path.open("rb"),
        as_attachment=True,
        filename=document.name,
        content_type=DOWNLOAD_TYPES.get(document.kind, "application/octet-stream"),
    )
    # chat's API wrapper is typed for HttpResponse; a streaming response passes through it.
    return cast(HttpResponse, response)


def _ids(request: HttpRequest, key: str) -> list[int] | None:
    values = request.GET.getlist(key)
    if not values:
        return None
    try:
        return [int(v) for v in values]
    except ValueError:
        raise DocumentRefused(f"'{key}' must be a number (an id).", "invalid_id") from None


@require_GET
@documents_api
def search(request: HttpRequest, user: User) -> HttpResponse:
    question = request.GET.get("q", "")[:2000]
    try:
        limit = min(max(int(request.GET.get("limit", selectors.SEARCH_LIMIT)), 1), 50)
    except ValueError:
        raise DocumentRefused("'limit' must be a number from 1 to 50.", "invalid_limit") from None
    hits = selectors.passages_search(
        user=user,
        question=question,
        documents=_ids(request, "document"),
        collections=_ids(request, "collection"),
        limit=limit,
    )
    return JsonResponse(
        {
            "results": [
                {
                    "document": {"id": h.document.pk, "name": h.document.name},
                    "page": h.passage.page,
                    "ordinal": h.passage.ordinal,
                    "text": h.passage.text,
                    "score": h.score,
                }
                for h in hits
            ]
        }
    )
