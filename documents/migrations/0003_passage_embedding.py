"""Each passage's vector and the model that made it (docs/documents.md, "Embeddings").

Both columns are null-able without a default, so SQLite adds them with ALTER TABLE ADD COLUMN
and keeps `documents_passage` (and the full-text triggers of 0002 on it) as it is."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("documents", "0002_fulltext_index")]

    operations = [
        migrations.AddField(
            model_name="passage",
            name="embedding",
            field=models.BinaryField(editable=False, null=True),
        ),
        migrations.AddField(
            model_name="passage",
            name="embedding_model",
            field=models.CharField(blank=True, editable=False, max_length=200, null=True),
        ),
    ]
