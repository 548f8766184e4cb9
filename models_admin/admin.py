"""Django admin for local models (the model-admin page proper is /models/)."""

from __future__ import annotations

from django.contrib import admin

from models_admin.models import LocalModel


@admin.register(LocalModel)
class LocalModelAdmin(admin.ModelAdmin):
    list_display = ("name", "file", "size_bytes", "state", "is_default", "open_to")
    readonly_fields = ("sha256", "metadata", "size_bytes", "created_at")
    filter_horizontal = ("groups",)

    @admin.display(description="open to")
    def open_to(self, model: LocalModel) -> str:
        return ", ".join(g.name for g in model.groups.all()) or "everyone"
