"""Documents people upload, the collections that hold them, and the passages they are cut into
for retrieval (see docs/documents.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.postgres.search import SearchVectorField
from django.db import models


def documents_dir() -> Path:
    """Where uploaded files live: under the data dir, each under a random name."""
    return Path(settings.DATA_DIR) / "documents"


class Collection(models.Model):
    """A named set of documents (a knowledge base). Its owner's alone, unless a staff member
    who owns it shares it with groups or with everyone (read only: search, read, download)."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="collections"
    )
    name = models.CharField(max_length=200)
    shared_with_everyone = models.BooleanField(default=False)
    shared_groups = models.ManyToManyField(
        "auth.Group", blank=True, related_name="shared_collections"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="one_collection_name_per_owner")
        ]

    def __str__(self) -> str:
        return self.name


class Document(models.Model):
    """One uploaded file and the record of its indexing job (queued → indexing → ready or
    failed, with a sentence saying why)."""

    class State(models.TextChoices):
        QUEUED = "queued"
        INDEXING = "indexing"
        READY = "ready"
        FAILED = "failed"

    ACTIVE = (State.QUEUED, State.INDEXING)

    class Kind(models.TextChoices):
        TEXT = "text"
        MARKDOWN = "markdown"
        CODE = "code"
        CSV = "csv"
        HTML = "html"
        PDF = "pdf"
        DOCX = "docx"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="documents"
    )
    # Null for a file attached to a conversation rather than kept in a collection (stage 2).
    collection = models.ForeignKey(
        Collection, null=True, blank=True, on_delete=models.CASCADE, related_name="documents"
    )
    name = models.CharField(max_length=255)  # as uploaded; never used as a path
    size_bytes = models.BigIntegerField()
    kind = models.CharField(max_length=20, choices=Kind.choices)  # from the content
    encoding = models.CharField(max_length=40, blank=True)  # how a text kind's sample decoded
    # The file's name under documents_dir(): random, so an upload's name never reaches the disk.
    stored_name = models.CharField(max_length=64, unique=True)
    pages = models.PositiveIntegerField(default=0)  # PDF pages; 0 for formats without pages
    tokens = models.PositiveIntegerField(default=0)  # an estimate (see documents.passages)
    chars = models.PositiveBigIntegerField(default=0)
    state = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED)
    error = models.TextField(blank=True)
    pages_done = models.PositiveIntegerField(default=0)
    pages_total = models.PositiveIntegerField(default=0)
    job_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["owner", "state"])]

    def __str__(self) -> str:
        return self.name

    @property
    def path(self) -> Path:
        return documents_dir() / self.stored_name

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "name": self.name,
            "collection": self.collection_id,
            "owner": self.owner.get_username(),
            "size": self.size_bytes,
            "kind": self.kind,
            "pages": self.pages,
            "tokens": self.tokens,
            "state": self.state,
            "error": self.error,
            "progress": {"done": self.pages_done, "total": self.pages_total},
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


class Passage(models.Model):
    """A few hundred tokens of a document's text, with its page, as retrieval returns it.

    Indexed by the database itself as rows are written: on SQLite by triggers into the FTS5
    table `documents_passage_fts`, on PostgreSQL by a trigger filling `search_vector` (GIN
    index); both made in migration 0002. `search_vector` stays empty on SQLite."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="passages")
    ordinal = models.PositiveIntegerField()
    page = models.PositiveIntegerField(null=True, blank=True)  # 1-based; None without pages
    text = models.TextField()
    tokens = models.PositiveIntegerField()
    chars = models.PositiveIntegerField()
    search_vector = SearchVectorField(null=True, editable=False)
    # Unit-length float32 vector of the text, by the model named beside it (documents.embeddings);
    # null until the inference workers have embedded it. Both null-able without a default, so
    # adding them altered SQLite's table in place and kept the full-text triggers (see 0002).
    embedding = models.BinaryField(null=True, editable=False)
    embedding_model = models.CharField(  # noqa: DJ001 - null keeps the table (above)
        max_length=200, null=True, blank=True, editable=False
    )

    class Meta:
        ordering = ["document", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["document", "ordinal"], name="one_passage_per_ordinal")
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.ordinal}"
