"""The full-text index of passages, in the database itself and filled by triggers as passages
are written or deleted, so no code path can leave the index behind its rows:

- SQLite: an FTS5 table over `documents_passage.text` (external content: the text is stored
  once, in the passage row; `rowid` is the passage id), Porter stemming, ranked with bm25().
- PostgreSQL: `search_vector` (an english tsvector) kept by the built-in
  `tsvector_update_trigger`, with a GIN index, ranked with ts_rank.

A later migration that makes SQLite rebuild `documents_passage` (most column changes) drops
its triggers with the old table: such a migration must run `sqlite_forwards` again and then
`INSERT INTO documents_passage_fts(documents_passage_fts) VALUES ('rebuild')`.
"""

from __future__ import annotations

from django.db import migrations

SQLITE = [
    "CREATE VIRTUAL TABLE documents_passage_fts USING fts5(text, content='documents_passage', "
    "content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER documents_passage_fts_insert AFTER INSERT ON documents_passage BEGIN "
    "INSERT INTO documents_passage_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER documents_passage_fts_delete AFTER DELETE ON documents_passage BEGIN "
    "INSERT INTO documents_passage_fts(documents_passage_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER documents_passage_fts_update AFTER UPDATE OF text ON documents_passage BEGIN "
    "INSERT INTO documents_passage_fts(documents_passage_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); "
    "INSERT INTO documents_passage_fts(rowid, text) VALUES (new.id, new.text); END",
    "INSERT INTO documents_passage_fts(documents_passage_fts) VALUES ('rebuild')",
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS documents_passage_fts_insert",
    "DROP TRIGGER IF EXISTS documents_passage_fts_delete",
    "DROP TRIGGER IF EXISTS documents_passage_fts_update",
    "DROP TABLE IF EXISTS documents_passage_fts",
]
POSTGRESQL = [
    "CREATE INDEX documents_passage_search_idx ON documents_passage USING gin (search_vector)",
    "CREATE TRIGGER documents_passage_search_update BEFORE INSERT OR UPDATE OF text "
    "ON documents_passage FOR EACH ROW EXECUTE FUNCTION "
    "tsvector_update_trigger(search_vector, 'pg_catalog.english', text)",
    "UPDATE documents_passage SET search_vector = to_tsvector('pg_catalog.english', text)",
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER IF EXISTS documents_passage_search_update ON documents_passage",
    "DROP INDEX IF EXISTS documents_passage_search_idx",
]


def _run(statements: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def run(apps, schema_editor):  # type: ignore[no-untyped-def]
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("documents", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE, "postgresql": POSTGRESQL}),
            _run({"sqlite": SQLITE_REVERSE, "postgresql": POSTGRESQL_REVERSE}),
        )
    ]
