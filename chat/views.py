"""Pages of the chat app."""

from __future__ import annotations

import uuid

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from chat import selectors
from models_admin.models import LocalModel


def chat_page(request: HttpRequest, conversation_id: uuid.UUID | None = None) -> HttpResponse:
    conversation = None
    messages = []
    if conversation_id is not None:
        conversation = selectors.conversation_get(
            user=request.user, conversation_id=conversation_id
        )
        messages = [
            m.as_frame() for m in selectors.conversation_messages(conversation=conversation)
        ]
    conversations = selectors.conversation_list(user=request.user)[: selectors.SIDEBAR_PAGE]
    models = LocalModel.objects.filter(state=LocalModel.State.READY)
    return render(
        request,
        "chat/chat.html",
        {
            "conversation": conversation,
            "conversations": conversations,
            "page_data": {
                "conversation": str(conversation.id) if conversation else None,
                "messages": messages,
                "models": [m.as_option() for m in models],
            },
        },
    )
