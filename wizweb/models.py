"""API keys: a user's keys for the HTTP APIs, stored as hashes and shown once."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models


def api_key_hash(key: str) -> str:
    # Keys are 256 random bits, so a fast hash is enough and keeps every request cheap.
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16)  # shown in lists, so a key can be recognised
    key_hash = models.CharField(max_length=64, unique=True)
    # Whether conversations made with this key are kept in the user's history.
    keep_history = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Preferences(models.Model):
    """What one user chose for every page, kept on the account so it follows them to any
    browser (a cookie is per browser, and stays only for the logged-out pages)."""

    THEMES = [("", "the system's"), ("light", "light"), ("dark", "dark")]

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preferences"
    )
    theme = models.CharField(max_length=5, choices=THEMES, blank=True, default="")

    def __str__(self) -> str:
        return f"preferences of {self.user}"
