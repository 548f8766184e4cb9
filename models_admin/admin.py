"""Django admin for local models (the model-admin page proper is /models/)."""

from __future__ import annotations

from django.contrib import admin

from models_admin.models import LocalModel


@admin.register(LocalModel)
class LocalModelAdmin(admin.ModelAdmin):
    list_display = ("name", "file", "size_bytes", "state", "is_default")
    readonly_fields = ("sha256", "metadata", "size_bytes", "created_at")
