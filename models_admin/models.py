"""Local GGUF models: one row per file under the models dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import models


class LocalModel(models.Model):
    class State(models.TextChoices):
        DOWNLOADING = "downloading"
        READY = "ready"
        FAILED = "failed"

    name = models.CharField(max_length=200)
    # Relative to settings.MODELS_DIR, so the models dir can move.
    file = models.CharField(max_length=500, unique=True)
    repo_id = models.CharField(max_length=200, blank=True)
    repo_file = models.CharField(max_length=500, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    # What the GGUF header says: architecture, context_length, chat_template, quantization, ...
    metadata = models.JSONField(default=dict, blank=True)
    # How workers load it: n_ctx, n_threads, n_gpu_layers, n_batch (any left out: the defaults).
    load_options = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.READY)
    error = models.TextField(blank=True)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="one_default_model",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def path(self) -> Path:
        return Path(settings.MODELS_DIR) / self.file

    @property
    def context_length(self) -> int:
        return int(self.metadata.get("context_length") or 0)

    @property
    def chat_template(self) -> str:
        return str(self.metadata.get("chat_template") or "")

    def as_option(self, *, context_window: int) -> dict[str, Any]:
        """What the chat page's model picker (and its context meter) needs."""
        return {
            "id": self.pk,
            "name": self.name,
            "default": self.is_default,
            "context_window": context_window,
        }
