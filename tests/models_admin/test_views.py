"""The model-admin page: staff only; models and workers shown; default, delete, load; the Hub
search, a repo's files with fit numbers, downloads started, joined and cancelled; scan."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.test import Client, override_settings

from inference.presence import worker_states
from models_admin.loading import model_memory_estimate
from models_admin.local_models import localmodel_scan
from models_admin.models import Download, LocalModel
from tests.conftest import start_worker
from tests.models_admin.conftest import SMOL_FILE, SMOL_REPO, TINY_FILE, TINY_REPO
from tests.models_admin.test_worker_control import state_of
from tests.processes import wait_for
from wizweb.redis_server import redis_connection

pytestmark = pytest.mark.django_db(transaction=True)


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_it_is_for_staff_only(owner: Any, default_model: Any) -> None:
    assert logged_in(owner).get("/models/").status_code == 403
    assert (
        logged_in(owner).post(f"/models/{default_model.pk}/", {"action": "delete"}).status_code
        == 403
    )
    assert LocalModel.objects.filter(pk=default_model.pk).exists()
    assert Client().get("/models/").status_code == 302


def test_an_outsider_gets_a_page_that_says_why_not_plain_text(owner: Any) -> None:
    response = logged_in(owner).get("/models/")
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")
    body = response.content.decode()
    assert "<h1>Not allowed</h1>" in body and "The model admin is for staff only." in body
    assert "wizweb/base.css" in body and "Back to your conversations" in body


def test_it_shows_the_models_and_their_metadata(staff: Any, default_model: Any) -> None:
    body = logged_in(staff).get("/models/").content.decode()
    assert default_model.name in body
    assert "Q4_1" in body and "llama" in body and "8192" in body
    assert "★ default" in body
    # Its file is ready; whether it is loaded depends on the workers (another test's may hold it).
    held = any(default_model.name in w.models for w in worker_states(redis_connection()))
    state = "loaded" if held else "on disk, not loaded"
    assert f'<td data-field="state" data-file-state="ready">{state}</td>' in body


def test_it_sets_the_default_and_deletes_a_model(staff: Any, second_model: Any) -> None:
    client = logged_in(staff)
    client.post(f"/models/{second_model.pk}/", {"action": "default"})
    second_model.refresh_from_db()
    assert second_model.is_default
    path = second_model.path
    client.post(f"/models/{second_model.pk}/", {"action": "delete"})
    assert not LocalModel.objects.filter(pk=second_model.pk).exists()
    assert not path.exists()
    assert LocalModel.objects.get().is_default  # the default passed to the one left


@pytest.mark.stack
def test_it_refuses_to_delete_a_loaded_model_and_loads_on_a_worker(
    staff: Any, second_model: Any, log_dir: Any
) -> None:
    worker = start_worker("admin-page", log_dir)
    try:
        client = logged_in(staff)
        response = client.post(
            f"/models/{second_model.pk}/",
            {"action": "load", "worker": "admin-page", "n_ctx": "2048", "n_threads": "1"},
            follow=True,
        )
        assert "Loading" in response.content.decode()
        wait_for(
            lambda: (s := state_of("admin-page")) and s.models == [second_model.name],
            timeout=30,
            what="the load",
        )
        refused = client.post(f"/models/{second_model.pk}/", {"action": "delete"}, follow=True)
        assert "unload it there first" in refused.content.decode()
        assert second_model.path.exists()
        bad = client.post(
            f"/models/{second_model.pk}/",
            {"action": "load", "worker": "admin-page", "n_batch": "1"},
            follow=True,
        )
        assert "n_batch must be" in bad.content.decode()
        # The page's script asks for JSON, so it can stay on the page and hear the outcome.
        answered = client.post(
            f"/models/{second_model.pk}/",
            {"action": "load", "worker": "nobody"},
            headers={"Accept": "application/json"},
        )
        assert answered.status_code == 400
        assert answered.json() == {
            "level": "error",
            "message": "There is no live inference worker named 'nobody'.",
        }
    finally:
        worker.stop()


def test_the_hub_and_download_actions_are_for_staff_only(
    owner: Any, hub: Any, clean_downloads: None
) -> None:
    client = logged_in(owner)
    assert client.get(f"/models/?q=wiz&repo={SMOL_REPO}").status_code == 403
    started = client.post("/models/downloads/", {"repo_id": TINY_REPO, "filename": TINY_FILE})
    assert started.status_code == 403
    assert client.post("/models/downloads/1/cancel/").status_code == 403
    assert client.post("/models/scan/").status_code == 403
    assert not Download.objects.exists()
    assert hub.requests == []


def test_it_searches_the_hub_and_shows_a_repos_files_with_fit_numbers(
    staff: Any, default_model: Any, hub: Any
) -> None:
    body = logged_in(staff).get(f"/models/?q=wiz-test&repo={SMOL_REPO}").content.decode()
    assert SMOL_REPO in body and TINY_REPO in body and "gated: needs HF_TOKEN" in body
    row = body[body.index(f'<tr data-file="{SMOL_FILE}">') :]
    row = row[: row.index("</tr>")]
    need = filesizeformat(model_memory_estimate(default_model, 8192))
    assert "Q4_1" in row and "93.8\xa0MB" in row
    assert f"{need} at 8192 tokens" in row
    assert "free" in row and ">Download</button>" in row


def test_it_says_why_the_hub_cannot_answer(staff: Any, hub: Any) -> None:
    body = logged_in(staff).get("/models/?repo=wiz-test/Nope").content.decode()
    assert "There is no repo wiz-test/Nope on the Hub" in body


@override_settings(WIZ_HUB_DEADLINE_S=1.0)  # out of reach, a search waits the whole deadline
def test_a_search_with_no_internet_suggests_copying_files_and_scan(
    staff: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://wiz-hub.invalid")
    body = logged_in(staff).get("/models/?q=SmolLM2").content.decode()
    assert "this box seems to be offline" in body
    assert f"copy its GGUF file into the models folder ({settings.MODELS_DIR})" in body
    assert "press Scan models dir" in body
    assert "Errno" not in body and "ConnectError" not in body


def test_a_download_starts_from_the_page_and_asking_again_joins_it(
    staff: Any, hub: Any, clean_downloads: None
) -> None:
    client = logged_in(staff)
    form = {"repo_id": TINY_REPO, "filename": TINY_FILE, "back_repo": TINY_REPO}
    first = client.post("/models/downloads/", form, follow=True)
    assert first.redirect_chain[-1][0] == f"/models/?repo={TINY_REPO}#downloads"
    assert f"Downloading {TINY_FILE}…" in first.content.decode()
    download = Download.objects.get()
    assert download.requested_by == staff
    assert f'<tr data-download="{download.pk}" data-state="queued">' in first.content.decode()
    again = client.post("/models/downloads/", form, follow=True)
    assert "is already being downloaded; showing that download." in again.content.decode()
    listed = again.content.decode()
    assert "downloading…" in listed[listed.index(f'<tr data-file="{TINY_FILE}">') :]
    assert Download.objects.count() == 1
    cancelled = client.post(f"/models/downloads/{download.pk}/cancel/", follow=True)
    assert f"Cancelling the download of {TINY_FILE}" in cancelled.content.decode()
    download.refresh_from_db()
    assert download.state == "cancelled"


def test_a_refused_download_says_why(staff: Any, hub: Any, clean_downloads: None) -> None:
    refused = logged_in(staff).post(
        "/models/downloads/", {"repo_id": TINY_REPO, "filename": "README.md"}, follow=True
    )
    assert "README.md is not a GGUF file" in refused.content.decode()
    assert not Download.objects.exists()


def test_the_scan_button_registers_files_put_there_by_hand(
    staff: Any, default_model: Any, tiny_gguf: Any, clean_downloads: None
) -> None:
    localmodel_scan()  # what other tests left in the shared models dir
    folder = Path(settings.MODELS_DIR) / "wiz-test"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(tiny_gguf, folder / "by-hand.gguf")
    body = logged_in(staff).post("/models/scan/", follow=True).content.decode()
    assert "Found wiz-test/by-hand.gguf; registered as Tiny Test." in body
    assert LocalModel.objects.filter(file="wiz-test/by-hand.gguf").exists()
