"""A pytest plugin (loaded with `-p tests.bootstrap`) that prepares the environment before
pytest-django reads the settings: a temporary data dir, the default model, and a private Redis
started by the same launcher `serve` uses. Settings are read from the environment at import
time, so this must run first, which is why it is a plugin and not a conftest fixture."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path

import pytest

from wizweb.default_model import default_model_fetch
from wizweb.redis_server import PrivateRedis

ROOT = Path(__file__).resolve().parent.parent

_state: dict[str, object] = {}


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem
        shutil.copyfile(source, target)


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Generator[None, None, None]:
    data_dir = Path(tempfile.mkdtemp(prefix="wiz-test-"))
    # The tests get a models dir of their own (they add and remove files in it), holding a link
    # to the default model fetched once into the usual place.
    shared = default_model_fetch(Path(os.environ.get("WIZ_MODELS_DIR") or ROOT / "var" / "models"))
    models_dir = data_dir / "models"
    models_dir.mkdir()
    link_or_copy(shared, models_dir / shared.name)
    redis = PrivateRedis(data_dir / "run").start()
    _state.update(data_dir=data_dir, redis=redis)
    os.environ.update(
        WIZ_DATA_DIR=str(data_dir),
        WIZ_MODELS_DIR=str(models_dir),
        REDIS_URL=redis.url,
        # Small chunks arrive quickly in tests; the figure is irrelevant to what is checked.
        WIZ_CHUNK_INTERVAL="0.02",
        # Off for the workers most tests share: a title job after every first answer would
        # rename conversations under tests that check their titles, and take CPU from them.
        # tests/chat/test_titles.py starts workers with it on.
        WIZ_MODEL_TITLES=os.environ.get("WIZ_MODEL_TITLES", "false"),
        # The waits before a login after failures (0.5-4 s each, 8 s in the browser test of
        # the lock); the tests of the waits themselves set the real length.
        WIZ_LOGIN_SLOWDOWN_FIRST_S="0.01",
    )
    return (yield)


def pytest_unconfigure(config: pytest.Config) -> None:
    redis = _state.pop("redis", None)
    if isinstance(redis, PrivateRedis):
        redis.stop()
    data_dir = _state.pop("data_dir", None)
    if isinstance(data_dir, Path):
        shutil.rmtree(data_dir, ignore_errors=True)
