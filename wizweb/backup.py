"""Backing up and restoring what a Wiz Web box cannot get back otherwise: the database (users,
conversations, answers, API keys, model rows) and the secret key that signs its sessions.

A backup is one gzipped tar file:

- `manifest.json`: when, from which database engine, what it holds, and the settings that were
  in the environment (secrets left out), so they can be set again;
- `db.sqlite3`, copied with SQLite's online backup API (one step, so it is a consistent snapshot
  however busy the workers are: WAL lets them write meanwhile), or `db.pgdump`, pg_dump's
  custom format, itself a consistent snapshot;
- `secret_key`, when the key lives in the data dir (not when DJANGO_SECRET_KEY gives it);
- `documents/`, the uploaded documents' files (docs/documents.md), copied after the database:
  a file uploaded meanwhile may be in it without its row, which is harmless.

Models are not in it: they are large, and the Hub has them again (`manage.py models scan` takes
back files put in the models dir by hand). Neither is Redis: it only holds live state.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis
from django.conf import settings
from django.db import connections
from django.utils import timezone

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "db.sqlite3"
PG_FILE = "db.pgdump"
SECRET_KEY_FILE = "secret_key"
DOCUMENTS = "documents"
# The environment worth writing down: what shapes the server, never a secret.
_SETTING_PREFIXES = ("WIZ_", "DJANGO_", "HF_ENDPOINT")
_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "KEY")


class BackupError(Exception):
    """A sentence for the person at the terminal."""


@dataclass(frozen=True)
class Restored:
    engine: str
    counts: dict[str, int]
    secret_key: bool
    settings: dict[str, str]
    set_aside: list[Path]


def _engine() -> str:
    engine = settings.DATABASES["default"]["ENGINE"]
    return "postgresql" if engine.endswith("postgresql") else "sqlite"


def _settings_in_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in sorted(os.environ.items())
        if name.startswith(_SETTING_PREFIXES)
        and name != "DJANGO_SETTINGS_MODULE"  # manage.py's, not the operator's
        and not any(word in name for word in _SECRET_WORDS)
    }


def _secret_key_file() -> Path:
    return Path(settings.DATA_DIR) / "secret_key"


def _documents_dir() -> Path:
    return Path(settings.DATA_DIR) / DOCUMENTS


def _counts() -> dict[str, int]:
    from django.contrib.auth import get_user_model

    from chat.models import Conversation, Message

    return {
        "users": get_user_model().objects.count(),
        "conversations": Conversation.objects.count(),
        "messages": Message.objects.count(),
    }


def _pg_command(program: str) -> tuple[list[str], dict[str, str]]:
    """The connection arguments of DATABASES['default'] for a PostgreSQL client program; the
    password goes in the environment, where `ps` does not show it."""
    if shutil.which(program) is None:
        raise BackupError(
            f"{program} is not installed, and the database is PostgreSQL: install PostgreSQL's "
            "client programs (Debian: apt-get install postgresql-client) and try again."
        )
    db = settings.DATABASES["default"]
    command = [program, "--dbname", str(db["NAME"])]
    if db.get("HOST"):
        command += ["--host", str(db["HOST"])]
    if db.get("PORT"):
        command += ["--port", str(db["PORT"])]
    if db.get("USER"):
        command += ["--username", str(db["USER"])]
    env = dict(os.environ)
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = str(db["PASSWORD"])
    return command, env


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise BackupError(f"{what} failed: {result.stderr.strip() or result.returncode}")


def _sqlite_copy(source: Path, target: Path) -> None:
    """SQLite's online backup, in one step: a snapshot as of one instant, taken while the
    workers go on writing (WAL mode lets them)."""
    src = sqlite3.connect(source, timeout=20)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        verdict = dst.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise BackupError(f"The copy of the database does not check out: {verdict}.")
    finally:
        dst.close()
        src.close()


def backup_write(*, path: Path) -> dict[str, Any]:
    """Write a backup to `path` (a new file); its manifest."""
    if path.exists():
        raise BackupError(
            f"{path} already exists; name a new file (backups are never overwritten)."
        )
    if not path.parent.is_dir():
        raise BackupError(f"{path.parent} is not a directory; create it first.")
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created_at": timezone.now().isoformat(),
        "engine": _engine(),
        "settings": _settings_in_environment(),
    }
    # Beside the target, so that the last step is a rename on one filesystem.
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".wiz-backup-") as tmp:
        work = Path(tmp)
        if manifest["engine"] == "sqlite":
            manifest["database"] = SQLITE_FILE
            _sqlite_copy(Path(settings.DATABASES["default"]["NAME"]), work / SQLITE_FILE)
        else:
            manifest["database"] = PG_FILE
            command, env = _pg_command("pg_dump")
            _run(
                [*command, "--format=custom", "--no-owner", "--file", str(work / PG_FILE)],
                env,
                "pg_dump",
            )
        key = _secret_key_file()
        manifest["secret_key"] = key.exists() and not os.environ.get("DJANGO_SECRET_KEY")
        if manifest["secret_key"]:
            shutil.copyfile(key, work / SECRET_KEY_FILE)
        documents = _documents_dir()
        files = sorted(f for f in documents.iterdir() if f.is_file()) if documents.is_dir() else []
        manifest["documents"] = len(files)
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        partial = work / "backup.tar.gz"
        with tarfile.open(partial, "w:gz") as archive:
            for name in (MANIFEST, manifest["database"], SECRET_KEY_FILE):
                if (work / name).exists():
                    archive.add(work / name, arcname=name)
            for file in files:
                archive.add(file, arcname=f"{DOCUMENTS}/{file.name}")
        with partial.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, path)  # 0600, as the umask makes every file here: it holds the key
    return manifest


def server_running() -> str | None:
    """Why the server looks alive (a sentence), or None: restore must not pull the database
    from under running processes."""
    pidfile = Path(settings.RUN_DIR) / "supervisord.pid"
    try:
        pid = int(pidfile.read_text().strip())
        if any("supervisord" in part for part in psutil.Process(pid).cmdline()):
            return f"`serve` is running from this data dir (supervisord, pid {pid})"
    except (OSError, ValueError, psutil.Error):
        pass
    connection = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2
    )
    try:
        connection.ping()
    except (redis.RedisError, OSError):
        return None  # no Redis: no worker can be running against this server
    try:
        if settings.USE_PRIVATE_REDIS:
            return "the private Redis of this data dir is running, so `serve` is"
        from rq import Worker

        from inference.presence import worker_states

        names = [w.name for w in worker_states(connection)]
        names += [w.name for w in Worker.all(connection=connection)]
        if names:
            return f"workers are running against its Redis ({', '.join(sorted(set(names)))})"
        return None
    finally:
        connection.close()


def _read_manifest(archive: tarfile.TarFile, path: Path) -> dict[str, Any]:
    try:
        member = archive.extractfile(MANIFEST)
        manifest: dict[str, Any] = json.loads(member.read()) if member else {}
    except (KeyError, ValueError):
        raise BackupError(
            f"{path} is not a Wiz Web backup (it has no readable manifest)."
        ) from None
    if manifest.get("format") != FORMAT:
        raise BackupError(
            f"{path} is a backup of format {manifest.get('format')!r}; this version reads {FORMAT}."
        )
    return manifest


def _plain(name: str) -> bool:
    """A file name of the documents dir (random letters), never a path the archive chooses."""
    return bool(name) and "/" not in name and name not in (".", "..")


def _set_aside(path: Path, stamp: str) -> Path | None:
    """Rename a file the restore replaces (and its SQLite companions) out of the way."""
    if not path.exists():
        return None
    kept = path.with_name(f"{path.name}.before-restore-{stamp}")
    os.replace(path, kept)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():  # a WAL left beside another database file would corrupt it
            os.replace(companion, kept.with_name(kept.name + suffix))
    return kept


def _restore_files(work: Path, manifest: dict[str, Any]) -> list[Path]:
    """Put the extracted database and key in place; the files set aside."""
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    set_aside: list[Path] = []
    connections.close_all()
    if manifest["engine"] == "sqlite":
        target = Path(settings.DATABASES["default"]["NAME"])
        staged = target.with_name(f".{target.name}.restoring")
        shutil.copyfile(work / SQLITE_FILE, staged)
        with staged.open("rb") as written:
            os.fsync(written.fileno())
        kept = _set_aside(target, stamp)
        set_aside += [kept] if kept else []
        os.replace(staged, target)
    else:
        command, env = _pg_command("pg_restore")
        options = ["--clean", "--if-exists", "--no-owner", "--single-transaction"]
        _run([*command, *options, "--exit-on-error", str(work / PG_FILE)], env, "pg_restore")
    if (work / SECRET_KEY_FILE).exists():
        kept = _set_aside(_secret_key_file(), stamp)
        set_aside += [kept] if kept else []
        shutil.copyfile(work / SECRET_KEY_FILE, _secret_key_file())
    if "documents" in manifest:  # a backup made before documents existed leaves them be
        kept = _set_aside(_documents_dir(), stamp)
        set_aside += [kept] if kept else []
        os.replace(work / DOCUMENTS, _documents_dir())
    return set_aside


def backup_restore(*, path: Path) -> Restored:
    """Put the database and the secret key of a backup in place of this server's, which must be
    stopped; what was there is renamed `*.before-restore-<time>`, not deleted."""
    if not path.is_file():
        raise BackupError(f"{path} is not a file.")
    why = server_running()
    if why:
        raise BackupError(
            f"The server is running ({why}): stop it first (Ctrl-C on `make run`, or stop "
            "every worker and web process), then restore."
        )
    try:
        with tarfile.open(path, "r:gz") as archive:
            manifest = _read_manifest(archive, path)
            if manifest["engine"] != _engine():
                raise BackupError(
                    f"This backup is of a {manifest['engine']} database, and this server uses "
                    f"{_engine()}: set DATABASE_URL as it was when the backup was made."
                )
            with tempfile.TemporaryDirectory(dir=settings.DATA_DIR, prefix=".wiz-restore-") as tmp:
                work = Path(tmp)
                database = SQLITE_FILE if manifest["engine"] == "sqlite" else PG_FILE
                names = archive.getnames()
                if database not in names:
                    raise BackupError(f"{path} has no {database}: it is not a whole backup.")
                # Only the names a backup has, never a path the archive chooses.
                (work / DOCUMENTS).mkdir()
                prefix = f"{DOCUMENTS}/"
                documents = [
                    n for n in names if n.startswith(prefix) and _plain(n.removeprefix(prefix))
                ]
                for name in (database, SECRET_KEY_FILE, *documents):
                    member = archive.extractfile(name) if name in names else None
                    if member is not None:
                        with (work / name).open("wb") as out:
                            shutil.copyfileobj(member, out)
                set_aside = _restore_files(work, manifest)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile) as exc:
        raise BackupError(f"{path} is not a Wiz Web backup, or is damaged ({exc}).") from None
    return Restored(
        engine=manifest["engine"],
        counts=_counts(),
        secret_key=manifest["secret_key"],
        settings=manifest.get("settings", {}),
        set_aside=set_aside,
    )
