"""Accounts: change password; sign-up only when an admin allowed it; disabled users stay out."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_it_changes_the_password(owner: Any) -> None:
    client = Client()
    client.force_login(owner)
    assert client.get("/accounts/password/").status_code == 200
    response = client.post(
        "/accounts/password/",
        {
            "old_password": PASSWORD,
            "new_password1": "a brand new secret 42",
            "new_password2": "a brand new secret 42",
        },
    )
    assert response.status_code == 302
    owner.refresh_from_db()
    assert owner.check_password("a brand new secret 42")


def test_sign_up_is_off_by_default() -> None:
    assert Client().get("/accounts/signup/").status_code == 404
    assert b"Create an account" not in Client().get("/accounts/login/").content
    Client().post(
        "/accounts/signup/", {"username": "eve", "password1": "x" * 12, "password2": "x" * 12}
    )
    assert not get_user_model().objects.filter(username="eve").exists()


@override_settings(WIZ_ALLOW_SIGNUP=True)
def test_sign_up_works_when_an_admin_allows_it() -> None:
    client = Client()
    response = client.post(
        "/accounts/signup/",
        {
            "username": "eve",
            "password1": "a long enough secret 7",
            "password2": "a long enough secret 7",
        },
    )
    assert response.status_code == 302
    user = get_user_model().objects.get(username="eve")
    assert not user.is_staff
    assert client.get("/").status_code == 200


def test_a_disabled_user_cannot_log_in(owner: Any) -> None:
    owner.is_active = False
    owner.save()
    client = Client()
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 200  # the form again, with its error
    assert client.get("/").status_code == 302


def test_a_disabled_users_open_session_reaches_no_page_and_no_api(owner: Any) -> None:
    client = Client()
    client.force_login(owner)
    assert client.get("/").status_code == 200
    owner.is_active = False
    owner.save()
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert client.get("/api/conversations/").status_code == 401


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_closed")
async def test_a_disabled_user_cannot_open_the_socket(owner: Any) -> None:
    from tests.chat.socket_client import connect

    socket = await connect(owner)  # the session is made while the account is active
    owner.is_active = False
    await owner.asave()
    connected, code = await socket.connect()
    assert (connected, code) == (False, 4401)  # closed before the handshake completes
    await socket.disconnect()
