"""Page preferences kept on the account: the dark mode toggle's choice follows the user to any
browser; the cookie counts only on logged-out pages."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from wizweb.models import Preferences

pytestmark = pytest.mark.django_db


def html_theme(client: Client, path: str = "/account/keys/") -> str | None:
    page = client.get(path).content.decode()
    match = re.search(r'<html lang="en"(?: data-theme="(\w+)")?>', page)
    assert match, page[:300]
    return match.group(1)


def test_it_renders_the_accounts_theme_in_any_browser(owner: Any, outsider: Any) -> None:
    first = Client()
    first.force_login(owner)
    assert html_theme(first) is None
    assert first.post("/account/theme/", {"theme": "dark"}).status_code == 200
    assert Preferences.objects.get(user=owner).theme == "dark"

    # Another browser, with no cookie, or with the other theme's cookie: the account decides.
    second = Client()
    second.force_login(owner)
    assert html_theme(second) == "dark"
    second.cookies["wiz_theme"] = "light"
    assert html_theme(second) == "dark"

    # The outsider's pages follow the system, whatever the owner chose.
    other = Client()
    other.force_login(outsider)
    assert html_theme(other) is None


def test_it_keeps_the_cookie_for_logged_out_pages_only(owner: Any) -> None:
    browser = Client()
    browser.cookies["wiz_theme"] = "dark"
    assert html_theme(browser, "/accounts/login/") == "dark"
    browser.force_login(owner)
    assert html_theme(browser) is None


def test_it_refuses_an_unknown_theme_and_a_logged_out_save(owner: Any) -> None:
    client = Client()
    client.force_login(owner)
    answer = client.post("/account/theme/", {"theme": "purple"})
    assert answer.status_code == 400
    assert "light, dark" in answer.json()["error"]
    assert not Preferences.objects.exists()
    anonymous = Client().post("/account/theme/", {"theme": "dark"})
    assert anonymous.status_code == 302
    assert not Preferences.objects.exists()


def test_the_toggle_carries_the_save_url_only_when_logged_in(owner: Any) -> None:
    client = Client()
    assert "data-save-url" not in client.get("/accounts/login/").content.decode()
    client.force_login(owner)
    assert 'data-save-url="/account/theme/"' in client.get("/account/keys/").content.decode()
