"""What the benchmarks start from: Django set up on a temporary data dir, with a private Redis
and a migrated SQLite database, and the default model fetched into the usual models dir."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_MODELS_DIR = Path(os.environ.get("WIZ_MODELS_DIR") or ROOT / "var" / "models")


def bench_django(data_dir: Path, models_dir: Path) -> tuple[object, Path]:
    """Start a private Redis, point the settings at data_dir and models_dir, set Django up and
    migrate (a new SQLite file, or the database WIZ_BENCH_DATABASE_URL names); returns the
    Redis (stop it at the end) and the default model's file."""
    from wizweb.default_model import default_model_fetch
    from wizweb.redis_server import PrivateRedis

    default_model = default_model_fetch(SHARED_MODELS_DIR)
    redis = PrivateRedis(data_dir / "run").start()
    os.environ.update(
        WIZ_DATA_DIR=str(data_dir),
        WIZ_MODELS_DIR=str(models_dir),
        REDIS_URL=redis.url,
        # WIZ_BENCH_DATABASE_URL: an empty PostgreSQL database to measure there instead.
        DATABASE_URL=os.environ.get("WIZ_BENCH_DATABASE_URL")
        or f"sqlite:///{data_dir / 'bench.sqlite3'}",
        DJANGO_SETTINGS_MODULE="wizweb.settings",
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return redis, default_model
