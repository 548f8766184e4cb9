"""/healthz: the state of the database, Redis and the workers, open to anyone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings

from tests.processes import Child, child_env, wait_for
from wizweb.redis_server import PrivateRedis

pytestmark = pytest.mark.django_db


@pytest.fixture
def download_worker(django_db_setup: None, log_dir: Any) -> Any:
    import sys

    from django.conf import settings

    from tests.processes import MANAGE

    child = Child(
        "download-worker",
        [sys.executable, MANAGE, "rqworker", settings.DOWNLOAD_QUEUE, "--name", "test-downloads"],
        child_env(),
        log_dir,
    )
    yield child
    child.stop()


def test_it_reports_healthy_when_everything_runs(
    inference_worker: Any, download_worker: Any
) -> None:
    def healthy() -> Any:
        response = Client().get("/healthz")
        return response if response.status_code == 200 else None

    response = wait_for(healthy, timeout=30, what="/healthz to turn 200")
    body = response.json()
    assert body["ok"] is True
    assert body["db"]["ok"] and body["redis"]["ok"]
    assert "test-inference" in [w["name"] for w in body["workers"]["inference"]]
    assert "test-downloads" in [w["name"] for w in body["workers"]["downloads"]]


def test_it_answers_503_when_no_inference_worker_runs(tmp_path: Path) -> None:
    empty = PrivateRedis(tmp_path).start()
    try:
        with override_settings(REDIS_URL=empty.url):
            response = Client().get("/healthz")
    finally:
        empty.stop()
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False
    assert body["workers"]["ok"] is False
    assert body["workers"]["error"] == "No inference worker is running."
    assert body["db"]["ok"] is True


def test_it_answers_503_when_redis_is_down(tmp_path: Path) -> None:
    with override_settings(REDIS_URL=f"unix://{tmp_path}/nothing-here.sock"):
        response = Client().get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["redis"]["ok"] is False
    assert body["workers"]["ok"] is False
    assert body["db"]["ok"] is True
