"""Accounts in a real browser (chromium through Playwright, daphne): another user's conversation
is a 404 on the page, the API and the socket; an admin creates and disables users in Django's
admin; a user changes the password and logs out."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser, Page, expect

from chat.models import Conversation, Message
from tests.chat import test_browser
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

page = test_browser.page  # the browser fixture, as the other browser tests have it


def log_in_as(page: Page, base_url: str, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


# Runs in the page: open /ws/chat/ with the browser's own cookie and return the frames that
# answer `frames`, whether the socket opened, and how it was closed.
SOCKET_SCRIPT = """async (frames) => {
  const socket = new WebSocket(`ws://${location.host}/ws/chat/`);
  const answers = [];
  let opened = false;
  return await new Promise((resolve) => {
    socket.onopen = () => {
      opened = true;
      frames.forEach((f) => socket.send(JSON.stringify(f)));
    };
    socket.onmessage = (event) => {
      answers.push(JSON.parse(event.data));
      if (answers.length === frames.length) { socket.close(); resolve({answers, opened}); }
    };
    socket.onclose = (event) => resolve({answers, opened, closed: event.code});
    setTimeout(() => resolve({answers, opened, timeout: true}), 10000);
  });
}"""


def test_an_outsider_gets_404_from_the_page_the_api_and_the_socket(
    page: Page, web_server: str, owner: Any, outsider: Any, default_model: Any
) -> None:
    private = Conversation.objects.create(owner=owner, title="Alice's diary")
    question = Message.objects.create(conversation=private, role="user", content="Dear diary")
    answer = Message.objects.create(
        conversation=private, parent=question, role="assistant", content="Go on."
    )
    log_in_as(page, web_server, "mallory")
    expect(page.get_by_label("Message")).to_be_visible()
    expect(page.locator("#conversation-list")).not_to_contain_text("Alice's diary")

    response = page.goto(f"{web_server}/c/{private.pk}/")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Dear diary")
    expect(page.get_by_role("link", name="Back to your conversations")).to_be_visible()

    # The API, from the same logged-in browser, with its CSRF token for the changes.
    api = f"/api/conversations/{private.pk}/"
    calls = page.evaluate(
        """async ([api]) => {
          const token = document.querySelector("input[name=csrfmiddlewaretoken]").value;
          const call = async (method, url, body) => {
            const r = await fetch(url, {method, headers: {"X-CSRFToken": token,
              "Content-Type": "application/json"}, body: body && JSON.stringify(body)});
            return [r.status, (await r.json()).error.code];
          };
          return [await call("GET", api), await call("PATCH", api, {title: "mine now"}),
                  await call("DELETE", api), await call("GET", api + "export?format=md"),
                  await call("GET", api + "export?format=json")];
        }""",
        [api],
    )
    assert calls == [[404, "not_found"]] * 5

    # The socket: a prompt into the conversation and a subscription to its answer.
    socket = page.evaluate(
        SOCKET_SCRIPT,
        [
            {"type": "prompt", "content": "mine now", "conversation": str(private.pk)},
            {"type": "subscribe", "message": str(answer.pk), "after": 0},
        ],
    )
    assert [(f["type"], f["code"]) for f in socket["answers"]] == [
        ("error", "not_found"),
        ("error", "not_found"),
    ]
    private.refresh_from_db()
    assert private.title == "Alice's diary"
    assert list(private.messages.values_list("content", flat=True).order_by("created_at")) == [
        "Dear diary",
        "Go on.",
    ]


NEW_PASSWORD = "a fine long secret 99"


def test_an_admin_creates_a_user_in_the_admin_and_a_disabled_user_stays_out(
    page: Page, web_server: str, default_model: Any
) -> None:
    get_user_model().objects.create_superuser("root", password=PASSWORD)
    page.goto(f"{web_server}/admin/auth/user/add/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_label("Username").fill("bob")
    page.get_by_label("Password:", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Password confirmation:", exact=True).fill(NEW_PASSWORD)
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    bob = get_user_model().objects.get(username="bob")
    assert bob.is_active and not bob.is_staff

    # Bob, in a browser of his own, logs in and gets a working chat page.
    browser: Browser = page.context.browser  # type: ignore[assignment]
    bobs = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    log_in_as(bobs, web_server, "bob", NEW_PASSWORD)
    expect(bobs.get_by_label("Message")).to_be_visible()
    expect(bobs.locator("body[data-connected=true]")).to_be_attached()

    # The admin unticks "Active".
    page.goto(f"{web_server}/admin/auth/user/{bob.pk}/change/")
    page.get_by_label("Active", exact=True).uncheck()
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
    bob.refresh_from_db()
    assert not bob.is_active

    # His session no longer opens pages, the API or the socket, and he cannot log in again.
    bobs.reload()
    expect(bobs).to_have_url(re.compile(r"/accounts/login/\?next=/"))
    status = bobs.evaluate("async () => (await fetch('/api/conversations/')).status")
    assert status == 401
    socket = bobs.evaluate(SOCKET_SCRIPT, [{"type": "ping"}])
    # Refused during the handshake (the consumer closes before accepting), so no frame at all.
    assert socket["answers"] == [] and not socket["opened"] and "closed" in socket
    log_in_as(bobs, web_server, "bob", NEW_PASSWORD)
    expect(bobs.get_by_role("alert")).to_contain_text("didn't match")
    expect(bobs).to_have_url(re.compile(r"/accounts/login/"))
    bobs.context.close()


def test_a_user_changes_the_password_logs_out_and_logs_in_with_the_new_one(
    page: Page, web_server: str, owner: Any, default_model: Any
) -> None:
    log_in_as(page, web_server, "alice")
    page.get_by_role("link", name="Password").click()
    page.get_by_label("Old password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password confirmation").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("heading", name="Password changed")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.goto(f"{web_server}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/"))

    log_in_as(page, web_server, "alice", PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text("didn't match")
    log_in_as(page, web_server, "alice", NEW_PASSWORD)
    expect(page.get_by_label("Message")).to_be_visible()
