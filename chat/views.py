"""Pages of the chat app."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from chat import selectors
from chat.attachments import message_frames
from chat.models import ConversationShare, SystemPromptPreset
from inference.sampling import Sampling
from models_admin.access import models_usable_by
from models_admin.loading import load_options_for


def chat_page(request: HttpRequest, conversation_id: uuid.UUID | None = None) -> HttpResponse:
    user = request.user
    assert isinstance(user, User)  # LoginRequiredMiddleware lets no anonymous user through
    conversation = None
    messages = []
    if conversation_id is not None:
        conversation = selectors.conversation_get(user=user, conversation_id=conversation_id)
        messages = message_frames(
            selectors.conversation_messages(conversation=conversation), owner=user
        )
    # One row more than a page says whether the sidebar has more to load, without a COUNT.
    conversations = list(selectors.conversation_list(user=user)[: selectors.SIDEBAR_PAGE + 1])
    models = models_usable_by(user)
    presets = list(SystemPromptPreset.objects.filter(owner=user))
    if conversation:
        chat_settings = conversation.settings
    else:
        # A new chat starts with the user's default preset, if they chose one.
        default = next((p for p in presets if p.is_default), None)
        chat_settings = {"system_prompt": default.text} if default else {}
    return render(
        request,
        "chat/chat.html",
        {
            "conversation": conversation,
            "conversations": conversations[: selectors.SIDEBAR_PAGE],
            "conversations_more": len(conversations) > selectors.SIDEBAR_PAGE,
            "sidebar_page": selectors.SIDEBAR_PAGE,
            "page_data": {
                "conversation": str(conversation.id) if conversation else None,
                "messages": messages,
                "models": [m.as_option(context_window=load_options_for(m).n_ctx) for m in models],
                "settings": chat_settings,
                "default_max_tokens": settings.WIZ_DEFAULT_MAX_TOKENS,
                "presets": [p.as_json() for p in presets],
                # What an empty field of the settings panel means, and the largest max_tokens.
                "defaults": {
                    "temperature": Sampling.temperature,
                    "top_p": Sampling.top_p,
                    "top_k": Sampling.top_k,
                    "max_tokens": settings.WIZ_DEFAULT_MAX_TOKENS,
                },
                "limits": {"max_tokens": settings.WIZ_MAX_CONTEXT},
            },
        },
    )


def shared_page(request: HttpRequest, token: str) -> HttpResponse:
    """A shared conversation, read-only: its newest branch, for whom its owner shared it with.
    Anyone else, and everyone once the link is revoked, gets the 404 an unknown link gets."""
    share = (
        ConversationShare.objects.select_related("conversation__owner").filter(token=token).first()
    )
    if share is None or not share.visible_to(request.user):
        raise Http404("No such shared conversation.")
    return render(
        request,
        "chat/shared.html",
        {
            "conversation": share.conversation,
            "messages": selectors.conversation_branch(conversation=share.conversation),
        },
    )
