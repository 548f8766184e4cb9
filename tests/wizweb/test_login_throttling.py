"""Login throttling (django-axes, configured in settings): failed logins slow the next tries,
then lock an address and an account for a while, the login page says so, staff see and clear
the lock in the admin, and API keys, open sessions and sockets are not touched by it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import AsyncClient, Client, override_settings
from django.utils import timezone

from tests.chat.socket_client import open_socket
from tests.conftest import PASSWORD
from wizweb.apikeys import apikey_create
from wizweb.login_slowdown import login_delay

pytestmark = pytest.mark.django_db

# The slowdown at its real length, for the tests of the slowdown itself.
real_slowdown = override_settings(WIZ_LOGIN_SLOWDOWN_FIRST_S=0.5)


@pytest.fixture(autouse=True)
def short_slowdown() -> Iterator[None]:
    # Each failure past the second waits 0.5-4 s: about a minute in all for this module's
    # lockouts, where the locks, not the waits, are under test.
    with override_settings(WIZ_LOGIN_SLOWDOWN_FIRST_S=0.01):
        yield


LOCKED = "logging in is locked for 15 minutes"


def log_in(address: str, username: str, password: str) -> tuple[Client, Any]:
    client = Client(REMOTE_ADDR=address)
    response = client.post("/accounts/login/", {"username": username, "password": password})
    return client, response


def logged_in(client: Client) -> bool:
    return client.get("/").status_code == 200


def fail(address: str, username: str, times: int) -> Any:
    """`times` wrong passwords; the answer to the last one."""
    response = None
    for _ in range(times):
        _, response = log_in(address, username, "not the password")
    return response


def test_the_defaults_are_five_failures_and_fifteen_minutes() -> None:
    assert settings.AXES_FAILURE_LIMIT == 5
    assert timedelta(minutes=15) == settings.AXES_COOLOFF_TIME


def test_it_locks_an_account_after_five_failures_and_says_so(owner: Any) -> None:
    fourth = fail("10.0.0.1", "alice", 4)
    assert fourth.status_code == 200
    assert "didn't match" in fourth.content.decode()
    fifth = fail("10.0.0.1", "alice", 1)
    assert fifth.status_code == 429
    page = fifth.content.decode()
    assert LOCKED in page
    assert 'name="password"' in page  # the login form is still there, for later
    # Locked: the right password does not let alice in, from this address or any other.
    for address in ("10.0.0.1", "10.0.0.2"):
        client, response = log_in(address, "alice", PASSWORD)
        assert response.status_code == 429
        assert LOCKED in response.content.decode()
        assert not logged_in(client)


def test_it_locks_an_address_that_fails_for_many_accounts(owner: Any, outsider: Any) -> None:
    for name in ("ann", "bob", "cyd", "dee", "eve"):  # none of them exists
        fail("10.0.0.3", name, 1)
    client, response = log_in("10.0.0.3", "mallory", PASSWORD)
    assert response.status_code == 429
    assert not logged_in(client)
    # The accounts themselves are not locked: from another address they log in.
    client, response = log_in("10.0.0.4", "mallory", PASSWORD)
    assert response.status_code == 302
    assert logged_in(client)


def test_it_locks_an_account_failed_from_many_addresses(owner: Any, outsider: Any) -> None:
    for n in range(5):
        fail(f"10.0.1.{n}", "alice", 1)
    client, response = log_in("10.0.1.9", "alice", PASSWORD)
    assert response.status_code == 429
    assert not logged_in(client)
    # Another account from that same fresh address is not locked.
    client, response = log_in("10.0.1.9", "mallory", PASSWORD)
    assert response.status_code == 302
    assert logged_in(client)


def test_a_good_login_clears_the_strikes_of_a_few_typos(owner: Any) -> None:
    fail("10.0.2.1", "alice", 4)
    client, response = log_in("10.0.2.1", "alice", PASSWORD)
    assert response.status_code == 302
    fail("10.0.2.1", "alice", 4)
    client, response = log_in("10.0.2.1", "alice", PASSWORD)
    assert response.status_code == 302
    assert logged_in(client)


def test_the_lock_ends_after_its_time(owner: Any) -> None:
    fail("10.0.3.1", "alice", 5)
    assert log_in("10.0.3.1", "alice", PASSWORD)[1].status_code == 429
    # As if sixteen minutes had passed: axes reads the time of the last failure.
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    client, response = log_in("10.0.3.1", "alice", PASSWORD)
    assert response.status_code == 302
    assert logged_in(client)


def test_the_admin_sees_the_lock_and_clears_it(owner: Any) -> None:
    fail("10.0.4.1", "alice", 5)
    admin = Client(REMOTE_ADDR="10.0.9.9")
    # A superuser, as `serve` creates; other staff need axes' "delete access attempt" right.
    admin.force_login(get_user_model().objects.create_superuser("root", password=PASSWORD))
    listing = admin.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200
    assert "alice" in listing.content.decode()
    assert "10.0.4.1" in listing.content.decode()
    attempt = AccessAttempt.objects.get(username="alice")
    assert "not the password" not in attempt.post_data  # axes masks what was typed
    response = admin.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    client, response = log_in("10.0.4.1", "alice", PASSWORD)
    assert response.status_code == 302
    assert logged_in(client)


def test_an_outsider_can_neither_see_nor_clear_a_lock(owner: Any, outsider: Any) -> None:
    fail("10.0.5.1", "alice", 5)
    attempt = AccessAttempt.objects.get(username="alice")
    client = Client(REMOTE_ADDR="10.0.9.8")
    client.force_login(outsider)
    assert client.get("/admin/axes/accessattempt/").status_code == 302  # to the admin's login
    client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert AccessAttempt.objects.filter(pk=attempt.pk).exists()
    assert log_in("10.0.5.1", "alice", PASSWORD)[1].status_code == 429


def test_the_admin_login_is_throttled_too(staff: Any) -> None:
    client = Client(REMOTE_ADDR="10.0.6.1")
    for _ in range(5):
        response = client.post("/admin/login/", {"username": "admin", "password": "wrong"})
    assert response.status_code == 429
    assert LOCKED in response.content.decode()
    assert log_in("10.0.6.2", "admin", PASSWORD)[1].status_code == 429


def test_a_locked_address_keeps_its_api_keys_and_open_sessions(owner: Any) -> None:
    secret = apikey_create(user=owner, name="script").secret
    session = Client(REMOTE_ADDR="10.0.7.1")
    session.force_login(owner)
    fail("10.0.7.1", "alice", 5)
    assert log_in("10.0.7.1", "alice", PASSWORD)[1].status_code == 429
    api = Client(REMOTE_ADDR="10.0.7.1", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.get("/api/conversations/").status_code == 200
    assert logged_in(session)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_closed")
async def test_a_session_from_the_login_form_opens_the_socket(owner: Any) -> None:
    """The session a real login makes names Django's ModelBackend (not axes' backend, which
    logs nobody in), so the socket's authentication finds its user."""
    client, response = await sync_to_async(log_in)("10.0.8.1", "alice", PASSWORD)
    assert response.status_code == 302
    socket = await open_socket(cookie=client.cookies[settings.SESSION_COOKIE_NAME].value)
    await socket.send_json_to({"type": "subscribe", "message": "0" * 32})
    assert (await socket.receive_json_from(timeout=5))["code"] == "not_found"
    await socket.disconnect()


@real_slowdown
def test_failures_slow_the_next_tries_from_the_third_on() -> None:
    assert [login_delay(n) for n in range(7)] == [0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 4.0]


@real_slowdown
def test_a_login_after_two_failures_waits_before_it_is_checked(owner: Any) -> None:
    fail("10.0.0.7", "alice", 2)
    started = time.monotonic()
    _, response = log_in("10.0.0.7", "alice", "not the password")
    assert time.monotonic() - started >= login_delay(2)  # a sleep's lower bound, not a timing
    assert response.status_code == 200


@real_slowdown
@pytest.mark.django_db(transaction=True)
async def test_on_the_async_path_the_wait_holds_only_that_login(owner: Any) -> None:
    """daphne runs requests on its event loop: a slowed login must not hold up anyone else."""
    client = AsyncClient(REMOTE_ADDR="10.0.0.8")
    wrong = {"username": "alice", "password": "not the password"}
    for _ in range(4):
        await client.post("/accounts/login/", wrong)
    slowed = asyncio.ensure_future(client.post("/accounts/login/", wrong))  # waits 2 s
    other = asyncio.ensure_future(AsyncClient(REMOTE_ADDR="10.0.0.9").get("/accounts/login/"))
    first, _ = await asyncio.wait({slowed, other}, return_when=asyncio.FIRST_COMPLETED)
    assert first == {other}
    assert other.result().status_code == 200
    assert (await slowed).status_code == 429  # the fifth failure locks
