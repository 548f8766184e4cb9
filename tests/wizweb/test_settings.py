"""A bad environment value stops start-up with one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import MANAGE


def manage_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, WIZ_DATA_DIR=str(tmp_path / "data"))
    full.update(env)
    return subprocess.run(
        [sys.executable, MANAGE, "check"], env=full, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WIZ_MAX_CONTEXT", "lots"),
        ("WIZ_CHUNK_INTERVAL", "soon"),
        ("DJANGO_DEBUG", "maybe"),
        ("REDIS_URL", "localhost:6379"),
        ("DATABASE_URL", "nosuchdb://x/y"),
        ("WIZ_LOGIN_FAILURE_LIMIT", "-1"),
        ("WIZ_LOGIN_LOCKOUT_MINUTES", "0"),
        ("WIZ_LOG_FORMAT", "xml"),
        ("WIZ_TOKENS_PER_DAY", "-5"),
        ("WIZ_REQUESTS_PER_MINUTE", "many"),
        ("WIZ_DOCUMENT_MAX_BYTES", "big"),
        ("WIZ_DOCUMENTS_MAX_BYTES_PER_USER", "0"),
        ("WIZ_MODEL_TITLES", "perhaps"),
    ],
)
def test_it_stops_with_one_line_naming_a_bad_value(tmp_path: Path, name: str, value: str) -> None:
    result = manage_check(tmp_path, **{name: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"wizweb: {name}")


def test_it_refuses_a_data_dir_it_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = manage_check(tmp_path, WIZ_DATA_DIR=str(blocker / "data"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("wizweb: WIZ_DATA_DIR=")


def test_it_generates_and_keeps_a_secret_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    for _ in range(2):
        result = subprocess.run(
            [
                sys.executable,
                MANAGE,
                "shell",
                "-c",
                "from django.conf import settings; print(settings.SECRET_KEY)",
            ],
            env=dict(env, WIZ_DATA_DIR=str(tmp_path / "data")),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    key_file = tmp_path / "data" / "secret_key"
    printed = result.stdout.strip().splitlines()[-1]
    assert printed == key_file.read_text().strip()
    assert len(printed) >= 50
    assert key_file.stat().st_mode & 0o077 == 0
