"""Pages of the chat app."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from chat import selectors
from chat.models import SystemPromptPreset
from inference.sampling import Sampling
from models_admin.loading import load_options_for
from models_admin.models import LocalModel


def chat_page(request: HttpRequest, conversation_id: uuid.UUID | None = None) -> HttpResponse:
    user = request.user
    assert isinstance(user, User)  # LoginRequiredMiddleware lets no anonymous user through
    conversation = None
    messages = []
    if conversation_id is not None:
        conversation = selectors.conversation_get(user=user, conversation_id=conversation_id)
        messages = [
            m.as_frame() for m in selectors.conversation_messages(conversation=conversation)
        ]
    # One row more than a page says whether the sidebar has more to load, without a COUNT.
    conversations = list(selectors.conversation_list(user=user)[: selectors.SIDEBAR_PAGE + 1])
    models = LocalModel.objects.filter(state=LocalModel.State.READY)
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
                "settings": conversation.settings if conversation else {},
                "default_max_tokens": settings.WIZ_DEFAULT_MAX_TOKENS,
                "presets": [p.as_json() for p in SystemPromptPreset.objects.filter(owner=user)],
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
