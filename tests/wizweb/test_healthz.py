"""/healthz: ok or not for anyone; the state of the database, Redis and the workers, with their
names and errors, for staff only (by session or by a staff user's API key)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings

from tests.documents.conftest import start_document_worker
from tests.processes import MANAGE, Child, child_env, wait_for
from wizweb.apikeys import apikey_create
from wizweb.redis_server import PrivateRedis

pytestmark = pytest.mark.django_db


@pytest.fixture
def download_worker(django_db_setup: None, log_dir: Path) -> Iterator[Child]:
    child = Child(
        "download-worker",
        [sys.executable, MANAGE, "rqworker", settings.DOWNLOAD_QUEUE, "--name", "test-downloads"],
        child_env(),
        log_dir,
    )
    yield child
    child.stop()


def staff_client(staff: Any) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def wait_healthy(client: Client, **headers: Any) -> Any:
    def healthy() -> Any:
        response = client.get("/healthz", **headers)
        return response if response.status_code == 200 else None

    return wait_for(healthy, timeout=30, what="/healthz to turn 200")


def test_it_reports_healthy_when_everything_runs(
    inference_worker: Any, download_worker: Any, staff: Any
) -> None:
    body = wait_healthy(staff_client(staff)).json()
    assert body["ok"] is True
    assert body["db"]["ok"] and body["redis"]["ok"]
    assert "test-inference" in [w["name"] for w in body["workers"]["inference"]]
    assert "test-downloads" in [w["name"] for w in body["workers"]["downloads"]]


def test_it_names_the_documents_worker_up_or_down_without_failing_for_it(
    inference_worker: Any, download_worker: Any, staff: Any, log_dir: Path
) -> None:
    client = staff_client(staff)
    body = wait_healthy(client).json()
    assert body["workers"]["documents"] == []
    assert body["workers"]["documents_error"] == (
        "No documents worker is running: uploaded files wait, unread, until one starts."
    )
    documents = start_document_worker(log_dir)
    try:

        def at_work() -> Any:
            # rq names a worker "started" for a moment before its first "idle".
            body = wait_healthy(client).json()
            named = body["workers"]["documents"]
            return body if named and named[0]["state"] in ("idle", "busy") else None

        body = wait_for(at_work, timeout=30, what="/healthz to show the documents worker at work")
        [named] = body["workers"]["documents"]
        assert named["name"] == documents.name
        assert "documents_error" not in body["workers"]
    finally:
        documents.stop()


def test_it_tells_anyone_but_staff_only_whether_it_is_ok(
    inference_worker: Any, download_worker: Any, staff: Any, owner: Any
) -> None:
    assert wait_healthy(Client()).json() == {"ok": True}
    user = Client()
    user.force_login(owner)
    assert user.get("/healthz").json() == {"ok": True}
    owner_key = apikey_create(user=owner, name="t").secret
    response = Client().get("/healthz", HTTP_AUTHORIZATION=f"Bearer {owner_key}")
    assert response.json() == {"ok": True}

    staff_key = apikey_create(user=staff, name="t").secret
    response = Client().get("/healthz", HTTP_AUTHORIZATION=f"Bearer {staff_key}")
    assert "test-inference" in [w["name"] for w in response.json()["workers"]["inference"]]


def test_it_answers_503_when_no_inference_worker_runs(tmp_path: Path, staff: Any) -> None:
    empty = PrivateRedis(tmp_path).start()
    try:
        with override_settings(REDIS_URL=empty.url):
            anonymous = Client().get("/healthz")
            response = staff_client(staff).get("/healthz")
    finally:
        empty.stop()
    assert anonymous.status_code == 503
    assert anonymous.json() == {"ok": False}
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False
    assert body["workers"]["ok"] is False
    assert body["workers"]["error"] == "No inference worker is running."
    assert body["db"]["ok"] is True


def test_it_answers_503_when_redis_is_down(tmp_path: Path, staff: Any) -> None:
    with override_settings(REDIS_URL=f"unix://{tmp_path}/nothing-here.sock"):
        anonymous = Client().get("/healthz")
        response = staff_client(staff).get("/healthz")
    assert anonymous.status_code == 503
    # The raw error names the socket's path: for staff only.
    assert anonymous.json() == {"ok": False}
    assert response.status_code == 503
    body = response.json()
    assert body["redis"]["ok"] is False
    assert "nothing-here.sock" in body["redis"]["error"]
    assert body["workers"]["ok"] is False
    assert body["db"]["ok"] is True
