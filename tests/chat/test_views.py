"""The chat pages: login required, the owner's conversations only, everything escaped."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.test import Client

from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db

XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_it_sends_anonymous_visitors_to_the_login_page() -> None:
    for url in ("/", f"/c/{uuid.uuid4()}/"):
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")


def test_it_shows_the_login_page_to_anyone() -> None:
    response = Client().get("/accounts/login/")
    assert response.status_code == 200
    assert b'name="password"' in response.content


def test_it_logs_in_with_the_form(owner: Any) -> None:
    client = Client()
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "correct horse battery staple"}
    )
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_it_lists_only_the_owners_conversations(owner: Any, outsider: Any) -> None:
    Conversation.objects.create(owner=owner, title="alice's plans")
    Conversation.objects.create(owner=outsider, title="mallory's secrets")
    body = logged_in(owner).get("/").content.decode()
    assert "alice&#x27;s plans" in body
    assert "mallory" not in body


def test_it_shows_a_conversation_to_its_owner(owner: Any) -> None:
    conversation = Conversation.objects.create(owner=owner, title="hello")
    Message.objects.create(conversation=conversation, role="user", content="Hi there")
    response = logged_in(owner).get(f"/c/{conversation.id}/")
    assert response.status_code == 200
    data = json.loads(response.context["page_data"]["messages"][0]["content"].join(['"', '"']))
    assert data == "Hi there"


def test_it_gives_an_outsider_404_for_someone_elses_conversation(owner: Any, outsider: Any) -> None:
    conversation = Conversation.objects.create(owner=owner, title="private")
    assert logged_in(outsider).get(f"/c/{conversation.id}/").status_code == 404
    assert logged_in(outsider).get(f"/c/{uuid.uuid4()}/").status_code == 404


def test_it_escapes_message_text_and_titles(owner: Any) -> None:
    conversation = Conversation.objects.create(owner=owner, title=XSS)
    Message.objects.create(conversation=conversation, role="assistant", content=XSS)
    body = logged_in(owner).get(f"/c/{conversation.id}/").content.decode()
    assert "<img src=x" not in body
    assert "<script>alert(2)" not in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body  # the title in the sidebar


def test_it_logs_out_with_a_post(owner: Any) -> None:
    client = logged_in(owner)
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_it_gives_the_page_models_with_their_context_window_settings_and_presets(
    owner: Any, default_model: Any
) -> None:
    from chat.models import SystemPromptPreset

    SystemPromptPreset.objects.create(owner=owner, name="Terse", text="Answer in one line.")
    conversation = Conversation.objects.create(owner=owner, settings={"temperature": 0.2})
    data = logged_in(owner).get(f"/c/{conversation.id}/").context["page_data"]
    assert data["models"] == [
        {
            "id": default_model.pk,
            "name": default_model.name,
            "default": True,
            "context_window": 8192,
            "thinks": False,  # the settings offer thinking only to a model that thinks
        }
    ]
    assert data["settings"] == {"temperature": 0.2}
    assert [p["name"] for p in data["presets"]] == ["Terse"]


def test_an_outsiders_404_page_says_not_found_and_shows_nothing_of_the_conversation(
    owner: Any, outsider: Any
) -> None:
    conversation = Conversation.objects.create(owner=owner, title="alice's secret plans")
    Message.objects.create(conversation=conversation, role="user", content="the hidden words")
    response = logged_in(outsider).get(f"/c/{conversation.id}/")
    body = response.content.decode()
    assert response.status_code == 404
    assert "<h1>Not found</h1>" in body
    assert "secret plans" not in body and "hidden words" not in body
    assert 'href="/"' in body


def test_the_sidebar_gets_one_page_and_knows_whether_there_is_more(owner: Any) -> None:
    from chat.selectors import SIDEBAR_PAGE

    for i in range(SIDEBAR_PAGE):
        Conversation.objects.create(owner=owner, title=f"c{i}")
    client = logged_in(owner)
    response = client.get("/")
    assert len(response.context["conversations"]) == SIDEBAR_PAGE
    assert response.context["conversations_more"] is False
    assert 'id="load-more" class="load-more" hidden' in response.content.decode()
    Conversation.objects.create(owner=owner, title="one more")
    response = client.get("/")
    assert len(response.context["conversations"]) == SIDEBAR_PAGE
    assert response.context["conversations"][0].title == "one more"
    assert response.context["conversations_more"] is True
    assert 'data-more="true"' in response.content.decode()
