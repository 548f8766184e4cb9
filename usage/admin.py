"""Quotas are set here (per user or per group); daily usage is shown read-only."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from usage.models import DailyUsage, Quota


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    list_display = ("__str__", "user", "group", "tokens_per_day", "requests_per_minute")
    autocomplete_fields = ("user", "group")
    search_fields = ("user__username", "group__name")


@admin.register(DailyUsage)
class DailyUsageAdmin(admin.ModelAdmin):
    list_display = (
        "day",
        "user",
        "model_name",
        "answers",
        "failed",
        "prompt_tokens",
        "completion_tokens",
    )
    list_filter = ("day", "model_name")
    search_fields = ("user__username", "model_name")
    date_hierarchy = "day"

    # Written only with the answers they count: an edit would make them lie.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
