"""The collections page, `/collections/`: a person's collections and those shared with them,
their files and how the reading of each goes. The page draws itself from the JSON API
(static/documents/collections.js); the server gives it only who is looking."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET


@require_GET
def collections_page(request: HttpRequest) -> HttpResponse:
    user = request.user
    assert isinstance(user, User)  # LoginRequiredMiddleware lets no anonymous user through
    return render(
        request,
        "documents/collections.html",
        {
            "page_data": {
                "username": user.get_username(),
                # Only staff share their collections, with everyone and/or these groups.
                "can_share": user.is_staff,
                "groups": sorted(Group.objects.values_list("name", flat=True))
                if user.is_staff
                else [],
                "max_bytes": settings.WIZ_DOCUMENT_MAX_BYTES,
            }
        },
    )
