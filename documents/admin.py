"""Django admin for collections and documents, for looking into what people stored."""

from __future__ import annotations

from django.contrib import admin

from documents.models import Collection, Document


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "shared_with_everyone", "updated_at")
    search_fields = ("name",)
    filter_horizontal = ("shared_groups",)


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "collection", "kind", "state", "pages", "tokens")
    list_filter = ("state", "kind")
    search_fields = ("name",)
    readonly_fields = ("stored_name", "job_id", "error", "pages_done", "pages_total")
