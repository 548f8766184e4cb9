"""Django admin for conversations and messages, for looking into history."""

from __future__ import annotations

from django.contrib import admin

from chat.models import Conversation, Message


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "updated_at")
    search_fields = ("title",)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "conversation", "role", "state", "finish_reason", "model_name")
    list_filter = ("role", "state")
