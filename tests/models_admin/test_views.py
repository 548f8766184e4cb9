"""The model-admin page: staff only; models and workers shown; default, delete, load."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from models_admin.models import LocalModel
from tests.conftest import start_worker
from tests.models_admin.test_worker_control import state_of
from tests.processes import wait_for

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


def test_it_shows_the_models_and_their_metadata(staff: Any, default_model: Any) -> None:
    body = logged_in(staff).get("/models/").content.decode()
    assert default_model.name in body
    assert "Q4_1" in body and "llama" in body and "8192" in body
    assert "★ default" in body


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
    finally:
        worker.stop()
