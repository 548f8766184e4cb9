"""What people use (tokens and answers per user, model and day) and what they may use (quotas
per user or group, and the requests that count against a per-minute limit)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class DailyUsage(models.Model):
    """One user's finished answers from one model on one day (UTC), with their real token
    counts: written in the same transaction as each answer's end (usage.recording), so it is
    exact, and a day's figures are a handful of rows to read."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="daily_usage"
    )
    day = models.DateField()
    # The name, not a key: the figures outlive the model's row.
    model_name = models.CharField(max_length=200)
    answers = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    # Time to first token as a histogram, {bucket: answers} (usage.recording.ttft_bucket):
    # enough for a day's p95 to within a tenth, in a few bytes per row.
    ttft_buckets = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-day", "user_id", "model_name"]
        verbose_name_plural = "daily usage"
        constraints = [
            models.UniqueConstraint(
                fields=["user", "day", "model_name"], name="one_usage_row_per_user_model_day"
            )
        ]
        indexes = [models.Index(fields=["day"])]

    def __str__(self) -> str:
        return f"{self.user_id} {self.model_name} {self.day}"

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Quota(models.Model):
    """Limits for one user or one group. A field left empty falls through: a user's own row,
    else the most generous of their groups' rows, else the site default (WIZ_TOKENS_PER_DAY,
    WIZ_REQUESTS_PER_MINUTE). 0 means no limit."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="quota",
    )
    group = models.OneToOneField(
        "auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="quota"
    )
    tokens_per_day = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Prompt and answer tokens of finished answers per day (UTC); 0: no limit; "
        "empty: the next rule decides.",
    )
    requests_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Answers asked for in any 60 seconds; 0: no limit; empty: the next rule decides.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(user__isnull=True) ^ models.Q(group__isnull=True)),
                name="quota_for_a_user_or_a_group",
            )
        ]

    def __str__(self) -> str:
        return f"quota of {self.user or self.group}"


class RequestStamp(models.Model):
    """An answer asked for: the last minute's rows of a user are their requests per minute.
    Written in the transaction that queues the answer, so a refused or rolled back request
    leaves none; older rows are deleted as the user's next request is counted."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="request_stamps"
    )
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["user", "at"])]

    def __str__(self) -> str:
        return f"{self.user_id} at {self.at:%H:%M:%S}"
