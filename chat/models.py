"""Conversations and their messages; an assistant message is also the record of its generation."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from chat.generation_log import generation_log
from chat.metrics import generation_observe
from usage.recording import usage_record


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    # Set once the user renames it: the title the model writes after the first answer
    # (chat.titles) never replaces theirs.
    title_by_user = models.BooleanField(default=False)
    # False for API calls made with a key that keeps no history: hidden, and removed when done.
    in_history = models.BooleanField(default=True)
    # The chat page's settings for this conversation, as generation options (chat.options).
    settings = models.JSONField(default=dict, blank=True)
    # Pinned conversations head the sidebar, newest first, before all the others.
    pinned = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["owner", "-updated_at"]),
            # The sidebar's order: pinned first, then the newest.
            models.Index(fields=["owner", "-pinned", "-updated_at"], name="chat_conv_sidebar_idx"),
        ]

    def __str__(self) -> str:
        return self.title or str(self.id)

    def touch(self) -> None:
        self.updated_at = timezone.now()
        # An update, not save(update_fields=...): a worker may touch a conversation that was
        # deleted while it answered.
        Conversation.objects.filter(pk=self.pk).update(updated_at=self.updated_at)


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"

    class Mode(models.TextChoices):
        CHAT = "chat"  # the turns, through the model's chat template
        COMPLETION = "completion"  # the user turn's text as it is (/v1/completions)

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        ABORTED = "aborted"
        FAILED = "failed"

    FINISHED_STATES = (State.DONE, State.ABORTED, State.FAILED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    # The turn this one answers or follows; versions of a turn share a parent (branches).
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    # A thinking model's thoughts, apart from the answer; never sent back to the model unless
    # its template asks for them (see chat.history).
    reasoning = models.TextField(blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.DONE)
    finish_reason = models.CharField(max_length=20, blank=True)
    error = models.TextField(blank=True)
    model = models.ForeignKey(
        "models_admin.LocalModel", null=True, blank=True, on_delete=models.SET_NULL
    )
    # Kept when the model row is deleted, so history still says what answered.
    model_name = models.CharField(max_length=200, blank=True)
    # The options as the client gave them (with the model that answers), and as parsed
    # (chat.options.options_stored): the worker reads the latter, never parsing them again.
    options = models.JSONField(default=dict, blank=True)
    parsed_options = models.JSONField(default=dict, blank=True)
    priority = models.CharField(max_length=10, default="normal")
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.CHAT)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    # Prompt tokens the worker had evaluated already (a follow-up turn reuses the history).
    cached_tokens = models.PositiveIntegerField(null=True, blank=True)
    # Of completion_tokens, those spent thinking.
    reasoning_tokens = models.PositiveIntegerField(null=True, blank=True)
    # Something the reader should know about a finished answer (a thinking block that never
    # closed and is kept as the answer), not an error.
    note = models.CharField(max_length=300, blank=True)
    # {"turns": n, "tokens": n} when earlier turns were left out to fit the context window.
    trimmed = models.JSONField(default=dict, blank=True)
    # OpenAI's shape: [{"id", "type": "function", "function": {"name", "arguments"}}].
    tool_calls = models.JSONField(default=list, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    # A user turn's attached documents and collections, as sent: {"documents": [ids],
    # "collections": [ids]} (chat.attachments). Every later answer on its branch may use them.
    attachments = models.JSONField(default=dict, blank=True)
    # An answer's sources as the model was given them, numbered from 1 (chat.grounding): a
    # snapshot, so their text outlives the documents' deletion.
    citations = models.JSONField(default=list, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    # The run (one process) of that worker: a namesake restarted after a crash has another, so
    # the reaper can tell that this answer's writer is gone (inference.presence).
    worker_run = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["conversation", "created_at"])]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED_STATES

    @property
    def usage(self) -> dict[str, Any] | None:
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens or 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens or 0},
        }

    def start(self, *, worker: str, run: str) -> bool:
        """queued → running; False when it is no longer queued (aborted meanwhile)."""
        now = timezone.now()
        started = Message.objects.filter(pk=self.pk, state=self.State.QUEUED).update(
            state=self.State.RUNNING, worker=worker, worker_run=run, started_at=now
        )
        if started:
            self.state, self.worker, self.worker_run = self.State.RUNNING, worker, run
            self.started_at = now
        return bool(started)

    def finish(
        self,
        *,
        state: str,
        content: str,
        finish_reason: str,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        cached_tokens: int | None = None,
        trimmed: dict[str, int] | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
        timings: dict[str, Any] | None = None,
        error: str = "",
        reasoning: str = "",
        reasoning_tokens: int | None = None,
        note: str = "",
    ) -> bool:
        """Save the end of the generation; False when the row is gone (its conversation was
        deleted meanwhile), which is not an error: there is nobody left to tell."""
        self.state = state
        self.content = content
        self.finish_reason = finish_reason
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cached_tokens = cached_tokens
        self.trimmed = trimmed or {}
        self.tool_calls = tool_calls or []
        self.timings = timings or {}
        self.error = error
        self.reasoning = reasoning
        self.reasoning_tokens = reasoning_tokens
        self.note = note
        self.finished_at = timezone.now()
        fields = (
            "reasoning",
            "reasoning_tokens",
            "note",
            "state",
            "content",
            "finish_reason",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "trimmed",
            "tool_calls",
            "timings",
            "error",
            "finished_at",
        )
        with transaction.atomic():  # the answer's end and its count in the usage table, or neither
            # An update, not save(update_fields=...), which raises on a deleted row.
            updated = Message.objects.filter(pk=self.pk).update(
                **{name: getattr(self, name) for name in fields}
            )
            if updated:
                usage_record(self)
        if updated:
            generation_log(self)
            generation_observe(self)
        return bool(updated)

    def done_frame(self) -> dict[str, Any]:
        """The `done` frame of a finished generation (docs/protocol.md)."""
        frame: dict[str, Any] = {
            "type": "done",
            "message": str(self.id),
            "finish_reason": self.finish_reason,
            "content": self.content,
            "reasoning": self.reasoning,
            "usage": self.usage,
            "timings": self.timings,
        }
        if self.note:
            frame["note"] = self.note
        if self.trimmed:
            frame["trimmed"] = self.trimmed
        if self.tool_calls:
            frame["tool_calls"] = self.tool_calls
        if self.error:
            frame["error"] = self.error
        return frame

    def as_frame(self) -> dict[str, Any]:
        """The message as the chat page and the API show it."""
        frame = {
            "id": str(self.id),
            "role": self.role,
            "content": self.content,
            "reasoning": self.reasoning,
            "note": self.note,
            "state": self.state,
            "finish_reason": self.finish_reason,
            "error": self.error,
            "model": self.model_name,
            "usage": self.usage,
            "timings": self.timings,
            "tool_calls": self.tool_calls,
            # null rather than {} when nothing was left out, as in the `done` frame: the page
            # reads any object as "trimmed".
            "trimmed": self.trimmed or None,
            "parent": str(self.parent_id) if self.parent_id else None,
            "created_at": self.created_at.isoformat(),
        }
        if self.role == self.Role.USER and self.attachments:
            frame["attachments"] = _attachments_for_page(self.attachments)
        elif self.role == self.Role.ASSISTANT and self.citations:
            alive = _documents_alive([c.get("document") for c in self.citations])
            frame["citations"] = [
                {**c, "gone": c.get("document") not in alive} for c in self.citations
            ]
        return frame


# A stand-in for helper A's lookup of a message's sources (issue 16, stage 2), so the page's
# side can be built and tested on its own: the lead keeps helper A's at merge.
def _documents_alive(ids: list[Any]) -> dict[int, Any]:
    from documents.models import Document

    return Document.objects.in_bulk([i for i in ids if isinstance(i, int)])


def _attachments_for_page(attachments: dict[str, Any]) -> list[dict[str, Any]]:
    from documents.models import Collection

    document_ids = attachments.get("documents") or []
    alive = _documents_alive(document_ids)
    entries: list[dict[str, Any]] = []
    for pk in document_ids:
        doc = alive.get(pk)
        if doc is None:
            entries.append({"id": pk, "name": "", "gone": True})
            continue
        fields = ("id", "name", "size", "pages", "tokens", "kind", "collection")
        entries.append({**{k: doc.as_json()[k] for k in fields}, "gone": False})
    collection_ids = attachments.get("collections") or []
    collections = Collection.objects.in_bulk(collection_ids)
    for pk in collection_ids:
        found = collections.get(pk)
        name = found.name if found else ""
        entries.append({"collection_id": pk, "collection_name": name, "gone": found is None})
    return entries


class SystemPromptPreset(models.Model):
    """A user's saved system prompt, offered in every conversation's settings."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="system_prompt_presets"
    )
    name = models.CharField(max_length=100)
    text = models.TextField()
    # The preset a new chat starts with (its system prompt); at most one per user.
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="one_preset_name_per_user"),
            models.UniqueConstraint(
                fields=["owner"],
                condition=models.Q(is_default=True),
                name="one_default_preset_per_user",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def as_json(self) -> dict[str, Any]:
        return {"id": self.pk, "name": self.name, "text": self.text, "default": self.is_default}


class ConversationShare(models.Model):
    """A read-only link to a conversation, for everyone logged in or for chosen users, until
    its owner revokes it (the row is then deleted, and the link is a 404)."""

    conversation = models.OneToOneField(
        Conversation, on_delete=models.CASCADE, related_name="share"
    )
    # The link's secret part: unguessable, so a link is only known to whom it was given.
    token = models.CharField(max_length=43, unique=True)
    everyone = models.BooleanField(default=False)
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"share of {self.conversation}"

    def visible_to(self, user: Any) -> bool:
        if user.pk == self.conversation.owner_id or self.everyone:
            return True
        return self.users.filter(pk=user.pk).exists()

    def as_json(self) -> dict[str, Any]:
        return {
            "url": f"/s/{self.token}/",
            "everyone": self.everyone,
            "users": sorted(self.users.values_list("username", flat=True)),
        }
