from __future__ import annotations

from django.urls import path

from chat import api, openai_api, views

urlpatterns = [
    path("", views.chat_page, name="chat"),
    path("c/<uuid:conversation_id>/", views.chat_page, name="conversation"),
    path("api/conversations/", api.conversation_list, name="api-conversations"),
    path(
        "api/conversations/<uuid:conversation_id>/",
        api.conversation_detail,
        name="api-conversation",
    ),
    path(
        "api/conversations/<uuid:conversation_id>/export",
        api.conversation_download,
        name="api-conversation-export",
    ),
    path(
        "api/conversations/<uuid:conversation_id>/share",
        api.conversation_share,
        name="api-conversation-share",
    ),
    path("s/<str:token>/", views.shared_page, name="shared"),
    path("api/presets/", api.preset_list, name="api-presets"),
    path("api/presets/<int:preset_id>/", api.preset_detail, name="api-preset"),
    path("v1/models", openai_api.models, name="openai-models"),
    path("v1/chat/completions", openai_api.chat_completions, name="openai-chat-completions"),
    path("v1/completions", openai_api.completions, name="openai-completions"),
]
