"""API keys: shown once, stored hashed, named, listed and revoked on a page and a command."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from wizweb.apikeys import apikey_create
from wizweb.models import ApiKey, api_key_hash

pytestmark = pytest.mark.django_db


def test_it_creates_a_key_shown_once_and_stored_hashed(owner: Any) -> None:
    client = Client()
    client.force_login(owner)
    page = client.post("/account/keys/", {"action": "create", "name": "editor"}).content.decode()
    secret = re.search(r'<code id="new-key">(wiz-[\w-]+)</code>', page).group(1)
    key = ApiKey.objects.get(user=owner)
    assert key.name == "editor"
    assert key.key_hash == api_key_hash(secret)
    assert secret not in str(ApiKey.objects.values().get())
    assert not key.keep_history
    again = client.get("/account/keys/").content.decode()
    assert secret not in again
    assert key.prefix in again


def test_it_revokes_only_the_owners_key(owner: Any, outsider: Any) -> None:
    client = Client()
    client.force_login(owner)
    client.post("/account/keys/", {"action": "create", "name": "k", "keep_history": "on"})
    key = ApiKey.objects.get(user=owner)
    assert key.keep_history
    intruder = Client()
    intruder.force_login(outsider)
    intruder.post("/account/keys/", {"action": "revoke", "key": key.pk})
    key.refresh_from_db()
    assert key.is_active
    client.post("/account/keys/", {"action": "revoke", "key": key.pk})
    key.refresh_from_db()
    assert not key.is_active


def test_the_keys_page_needs_a_login() -> None:
    response = Client().get("/account/keys/")
    assert response.status_code == 302


def test_the_command_creates_lists_and_revokes(owner: Any) -> None:
    out = StringIO()
    call_command("apikey", "create", "alice", "--name", "script", stdout=out)
    secret = out.getvalue().strip()
    key = ApiKey.objects.get()
    assert key.key_hash == api_key_hash(secret)
    listing = StringIO()
    call_command("apikey", "list", stdout=listing)
    assert f"{key.pk}\talice\tscript\t{key.prefix}…\tactive" in listing.getvalue()
    call_command("apikey", "revoke", str(key.pk), stdout=StringIO())
    key.refresh_from_db()
    assert not key.is_active
    with pytest.raises(CommandError, match="no user named 'bob'"):
        call_command("apikey", "create", "bob")
    with pytest.raises(CommandError, match="no active key"):
        call_command("apikey", "revoke", str(key.pk))


def test_the_page_that_shows_a_new_key_is_never_cached(owner: Any) -> None:
    client = Client()
    client.force_login(owner)
    response = client.post("/account/keys/", {"action": "create", "name": "editor"})
    assert "wiz-" in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert "private" in response["Cache-Control"]


@pytest.mark.parametrize("key_id", ["²", "99999999999999999999999", "-1", "", "1 OR 1=1"])
def test_it_ignores_a_revoke_of_a_key_id_that_is_not_one(owner: Any, key_id: str) -> None:
    client = Client(raise_request_exception=False)
    client.force_login(owner)
    client.post("/account/keys/", {"action": "create", "name": "k"})
    response = client.post("/account/keys/", {"action": "revoke", "key": key_id})
    assert response.status_code == 200
    assert ApiKey.objects.get(user=owner).is_active


@pytest.mark.django_db(transaction=True)
def test_it_notes_when_a_key_was_last_used_to_the_minute(owner: Any) -> None:
    """The keys page shows the minute; a database write per request would buy nothing more."""
    secret = apikey_create(user=owner, name="script").secret
    client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")

    def used_at() -> Any:
        return ApiKey.objects.get(user=owner).last_used_at

    assert client.get("/v1/models").status_code == 200
    first = used_at()
    assert first is not None
    ApiKey.objects.filter(user=owner).update(last_used_at=first - timedelta(seconds=30))
    client.get("/v1/models")
    assert used_at() == first - timedelta(seconds=30)
    ApiKey.objects.filter(user=owner).update(last_used_at=first - timedelta(minutes=2))
    client.get("/v1/models")
    assert used_at() > first - timedelta(seconds=1)
