"""Local GGUF models (one row per file under the models dir) and their downloads from the Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models.functions import Coalesce
from django.utils import timezone

from inference.reasoning import TemplateReasoning, template_reasoning


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
    # None: everyone may use it; else only members of these groups (models_admin.access).
    groups = models.ManyToManyField(
        "auth.Group",
        blank=True,
        related_name="local_models",
        help_text="Leave empty to open the model to everyone; otherwise only members of these "
        "groups (and staff) see and use it.",
    )
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

    @property
    def template_abilities(self) -> TemplateReasoning:
        """Whether it thinks, how thinking is switched, whether it calls tools natively: read
        from its chat template, the same way the worker reads it."""
        return template_reasoning(self.chat_template)

    @property
    def thinking_summary(self) -> str:
        """How the model-admin page says whether and how the model thinks."""
        found = self.template_abilities
        if not found.thinks or found.markers is None:
            return "no"
        marks = f"{found.markers.open}…{found.markers.close}"
        if found.switch == "enable_thinking":
            return f"yes, {marks}; switched by its template (enable_thinking)"
        if found.opens_block:
            return f"always, {marks}; off by closing the block at once"
        return f"yes, {marks}; off by an empty thinking block"

    def as_option(self, *, context_window: int) -> dict[str, Any]:
        """What the chat page's model picker (and its context meter) needs."""
        return {
            "id": self.pk,
            "name": self.name,
            "default": self.is_default,
            "context_window": context_window,
            # The settings panel offers thinking on/off and a budget only to a model that thinks.
            "thinks": self.template_abilities.thinks,
        }


class Download(models.Model):
    """One file fetched from the Hub into the models dir, with its explicit state changes.

    It is joined, not repeated, while it is queued or running; a cancelled, failed or
    interrupted one leaves its partial file (`part_path`) for the next attempt to resume from."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (State.QUEUED, State.RUNNING)

    repo_id = models.CharField(max_length=200)
    filename = models.CharField(max_length=500)
    revision = models.CharField(max_length=200, default="main")
    # The commit the revision named when the download was asked for: every attempt fetches the
    # same bytes, so a resumed file is never stitched from two versions.
    commit = models.CharField(max_length=64, blank=True)
    sha256 = models.CharField(max_length=64)  # what the Hub publishes for the file
    total_bytes = models.BigIntegerField(default=0)
    bytes_done = models.BigIntegerField(default=0)
    resumed_from_bytes = models.BigIntegerField(default=0)  # on disk when the last attempt began
    state = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    local_model = models.ForeignKey(
        LocalModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="downloads"
    )
    job_id = models.CharField(max_length=100, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # Asking twice for one file joins the running download: never two writers of one
            # partial file.
            models.UniqueConstraint(
                fields=["repo_id", "filename"],
                condition=models.Q(state__in=["queued", "running"]),
                name="one_active_download_per_file",
            )
        ]

    def __str__(self) -> str:
        return f"{self.repo_id}/{self.filename} ({self.state})"

    @property
    def file(self) -> str:
        """Where the file lands, relative to the models dir: the repo's own layout."""
        return f"{self.repo_id}/{self.filename}"

    @property
    def path(self) -> Path:
        return Path(settings.MODELS_DIR) / self.file

    @property
    def part_path(self) -> Path:
        return self.path.with_name(self.path.name + ".incomplete")

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE

    @property
    def percent(self) -> float:
        return round(100 * self.bytes_done / self.total_bytes, 1) if self.total_bytes else 0.0

    # The state changes. Each is a compare-and-set on the row, since a cancel, a revive and the
    # fetching process may race: only one of them wins, and says so by returning True.

    def requeue(self, *, job_id: str) -> bool:
        """Queued again under a new job (a revive), if it is still active under its old one."""
        taken = Download.objects.filter(
            pk=self.pk, job_id=self.job_id, state__in=self.ACTIVE
        ).update(state=self.State.QUEUED, job_id=job_id)
        if taken:
            self.state, self.job_id = self.State.QUEUED, job_id
        return bool(taken)

    def start(self, *, job_id: str) -> bool:
        """Running, one attempt more, if it is still active and still names `job_id` (a job
        made stale by a revive does nothing)."""
        started = Download.objects.filter(pk=self.pk, job_id=job_id, state__in=self.ACTIVE).update(
            state=self.State.RUNNING,
            attempts=models.F("attempts") + 1,
            started_at=Coalesce(models.F("started_at"), timezone.now()),
            error="",
        )
        self.refresh_from_db()
        return bool(started)

    def finish(
        self,
        state: str,
        *,
        error: str = "",
        states: tuple[str, ...] = (State.RUNNING,),
        **fields: Any,
    ) -> bool:
        """A final state, only from `states`; a cancelled one records what its partial file
        holds, for the resume."""
        if state == self.State.CANCELLED and self.part_path.exists():
            fields["bytes_done"] = self.part_path.stat().st_size
        changed = Download.objects.filter(pk=self.pk, state__in=states).update(
            state=state, error=error, finished_at=timezone.now(), **fields
        )
        self.refresh_from_db()
        return bool(changed)
