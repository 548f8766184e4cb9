"""`manage.py backup` while a real worker answers, `manage.py restore` into a fresh data dir,
and restore's refusals (a running server, a file that is no backup)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from chat.models import Message
from chat.options import options_parse
from chat.queue import message_abort
from chat.submission import prompt_submit
from tests.conftest import PASSWORD
from tests.processes import MANAGE, Child, child_env, shared_database_url, wait_for
from wizweb.redis_server import PrivateRedis

pytestmark = pytest.mark.django_db(transaction=True)

ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
ESSAY = "Write a very long essay about the history of rivers, with many details."

# Run in the restored data dir: every assistant message as the restored database has it.
READ_RESTORED = """
import json
from django.contrib.auth import get_user_model
from chat.models import Message
rows = Message.objects.filter(role="assistant")
print(json.dumps({
    "messages": {str(m.id): [m.state, m.content, m.completion_tokens] for m in rows},
    "alice_password_ok": get_user_model().objects.get(username="alice").check_password(%r),
}))
"""


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, MANAGE, *args], env=env, capture_output=True, text=True, timeout=300
    )


def submit(user: Any, content: str, **options: Any) -> Message:
    accepted = prompt_submit(
        user=user,
        conversation_id=None,
        content=content,
        options=options_parse({"temperature": 0.0, **options}, max_priority="high"),
    )
    return accepted.message


def states(ids: list[uuid.UUID]) -> list[str]:
    by_id = dict(Message.objects.filter(pk__in=ids).values_list("pk", "state"))
    return [by_id[i] for i in ids]


def finished_rows() -> dict[str, list[Any]]:
    rows = Message.objects.filter(role="assistant", state__in=Message.FINISHED_STATES)
    return {str(m.id): [m.state, m.content, m.completion_tokens] for m in rows}


@pytest.fixture
def fresh_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a new box: its own data dir, its own (stopped) private Redis, and a
    database of its own: SQLite in the data dir, or a new PostgreSQL database beside the
    test database when the suite runs on PostgreSQL."""
    env = child_env(WIZ_DATA_DIR=str(tmp_path / "fresh"))
    env.pop("REDIS_URL")
    if not ON_POSTGRES:
        env.pop("DATABASE_URL")
        yield env
        return
    name = f"{connection.settings_dict['NAME']}_restored"
    db = connection.settings_dict
    admin: dict[str, Any] = {
        "dbname": "postgres",
        "autocommit": True,
        **{key.lower(): db[key] for key in ("HOST", "PORT", "USER", "PASSWORD") if db.get(key)},
    }
    with psycopg.connect(**admin) as pg:
        pg.execute(f'DROP DATABASE IF EXISTS "{name}"')
        pg.execute(f'CREATE DATABASE "{name}"')
    env["DATABASE_URL"] = shared_database_url().rsplit("/", 1)[0] + f"/{name}"
    yield env
    with psycopg.connect(**admin) as pg:
        pg.execute(f'DROP DATABASE IF EXISTS "{name}"')


needs_pg_dump = pytest.mark.skipif(
    ON_POSTGRES and shutil.which("pg_dump") is None,
    reason="pg_dump is not installed (Debian: postgresql-client); it backs up PostgreSQL.",
)


@needs_pg_dump
def test_it_backs_up_a_server_that_is_answering_and_restores_every_finished_answer(
    owner: Any, default_model: Any, inference_worker: Child, tmp_path: Path, fresh_env: Any
) -> None:
    earlier = [submit(owner, f"Name a colour ({n}).", max_tokens=12).id for n in range(2)]
    wait_for(lambda: states(earlier) == ["done", "done"], timeout=120, what="the first two answers")
    essay = submit(owner, ESSAY, max_tokens=1000).id
    wait_for(lambda: states([essay]) == ["running"], timeout=60, what="the essay to start")
    # Two more, written beside the essay while the backup runs.
    beside = [submit(owner, f"Name a fruit ({n}).", max_tokens=12).id for n in range(2)]
    finished_before = finished_rows()
    assert set(map(str, earlier)) <= set(finished_before)

    archive = tmp_path / "wiz.tar.gz"
    backed_up = manage("backup", str(archive), env=child_env())
    assert backed_up.returncode == 0, backed_up.stderr
    assert "and the secret key" in backed_up.stdout
    essay_ran_throughout = states([essay]) == ["running"]
    message_abort(user=owner, message_id=essay)
    wait_for(
        lambda: all(s in Message.FINISHED_STATES for s in states([essay, *beside])),
        timeout=120,
        what="the essay to stop and the others to end",
    )

    restored = manage("restore", str(archive), env=fresh_env)
    assert restored.returncode == 0, restored.stderr
    assert "Restored the" in restored.stdout
    shown = manage("shell", "-v", "0", "-c", READ_RESTORED % PASSWORD, env=fresh_env)
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout.strip().splitlines()[-1])
    messages = found["messages"]
    # Every answer finished before the backup began is there, whole.
    for message_id, row in finished_before.items():
        assert messages[message_id] == row
    # Whatever else it holds is a true snapshot: a finished row as it is now, never half of one.
    now = finished_rows()
    for message_id, row in messages.items():
        if row[0] in Message.FINISHED_STATES:
            assert row == now[message_id]
        else:
            assert row[0] in ("queued", "running") and row[1] == ""
    if essay_ran_throughout:
        assert messages[str(essay)][0] == "running"
    assert found["alice_password_ok"] is True
    if not os.environ.get("DJANGO_SECRET_KEY"):
        fresh_key = Path(fresh_env["WIZ_DATA_DIR"]) / "secret_key"
        assert fresh_key.read_text().strip() == settings.SECRET_KEY


@needs_pg_dump
def test_restore_refuses_while_workers_run_against_the_servers_redis(
    owner: Any, inference_worker: Child, tmp_path: Path
) -> None:
    archive = tmp_path / "wiz.tar.gz"
    assert manage("backup", str(archive), env=child_env()).returncode == 0
    # The test Redis, where the session's worker beats; a data dir that is not the tests'.
    env = child_env(WIZ_DATA_DIR=str(tmp_path / "other"))
    env.pop("DATABASE_URL")
    result = manage("restore", str(archive), env=env)
    assert result.returncode == 1
    assert "The server is running" in result.stderr
    assert "test-inference" in result.stderr
    assert "stop it first" in result.stderr
    assert not (tmp_path / "other" / "db.sqlite3").exists()


@pytest.mark.skipif(ON_POSTGRES, reason="a SQLite data dir's own private Redis")
def test_restore_refuses_while_the_data_dirs_private_redis_runs(
    owner: Any, tmp_path: Path, fresh_env: dict[str, str]
) -> None:
    archive = tmp_path / "wiz.tar.gz"
    assert manage("backup", str(archive), env=child_env()).returncode == 0
    redis = PrivateRedis(tmp_path / "fresh" / "run").start()
    try:
        result = manage("restore", str(archive), env=fresh_env)
    finally:
        redis.stop()
    assert result.returncode == 1
    assert "the private Redis of this data dir is running" in result.stderr
    assert not (tmp_path / "fresh" / "db.sqlite3").exists()
    # Once it is stopped, the same restore goes through.
    assert manage("restore", str(archive), env=fresh_env).returncode == 0


def test_backup_never_overwrites_and_restore_refuses_a_file_that_is_no_backup(
    db: None, tmp_path: Path, fresh_env: dict[str, str]
) -> None:
    taken = tmp_path / "taken.tar.gz"
    taken.write_text("something else")
    result = manage("backup", str(taken), env=child_env())
    assert result.returncode == 1
    assert "already exists; name a new file" in result.stderr
    assert taken.read_text() == "something else"
    result = manage("restore", str(taken), env=fresh_env)
    assert result.returncode == 1
    assert "is not a Wiz Web backup" in result.stderr


def test_a_backup_is_private_and_keeps_the_settings_but_no_secret(db: None, tmp_path: Path) -> None:
    archive = tmp_path / "wiz.tar.gz"
    env = child_env(WIZ_LOG_FORMAT="json", WIZ_METRICS_TOKEN="token-that-must-stay-out")
    assert manage("backup", str(archive), env=env).returncode == 0
    assert archive.stat().st_mode & 0o777 == 0o600
    with tarfile.open(archive) as backup:
        names = backup.getnames()
        manifest_file = backup.extractfile("manifest.json")
        assert manifest_file is not None
        manifest = json.loads(manifest_file.read())
    key = [] if os.environ.get("DJANGO_SECRET_KEY") else ["secret_key"]
    files = [n for n in names if not n.startswith("documents/")]
    assert sorted(files) == sorted(["manifest.json", manifest["database"], *key])
    assert manifest["settings"]["WIZ_LOG_FORMAT"] == "json"
    assert "WIZ_METRICS_TOKEN" not in manifest["settings"]
    assert "DJANGO_SETTINGS_MODULE" not in manifest["settings"]
    assert "token-that-must-stay-out" not in json.dumps(manifest)


def test_it_backs_up_the_documents_files_and_restores_them_setting_the_old_ones_aside(
    db: None, tmp_path: Path, fresh_env: dict[str, str]
) -> None:
    documents = Path(settings.DATA_DIR) / "documents"
    documents.mkdir(exist_ok=True)
    (documents / "k3v9backup").write_bytes(b"%PDF-1.4 a protocol")
    archive = tmp_path / "wiz.tar.gz"
    try:
        assert manage("backup", str(archive), env=child_env()).returncode == 0
    finally:
        (documents / "k3v9backup").unlink()
    with tarfile.open(archive) as backup:
        assert "documents/k3v9backup" in backup.getnames()
    fresh = Path(fresh_env["WIZ_DATA_DIR"])
    (fresh / "documents").mkdir(parents=True)
    (fresh / "documents" / "older").write_bytes(b"there before")

    restored = manage("restore", str(archive), env=fresh_env)
    assert restored.returncode == 0, restored.stderr
    assert (fresh / "documents" / "k3v9backup").read_bytes() == b"%PDF-1.4 a protocol"
    assert not (fresh / "documents" / "older").exists()
    (aside,) = fresh.glob("documents.before-restore-*")
    assert (aside / "older").read_bytes() == b"there before"
