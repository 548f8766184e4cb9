"""A conversation's read-only share link: who may read it (the owner, everyone logged in, or
chosen users), and revoking it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat.models import Conversation, Message
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def shared_with_everyone(owner: Any, conversation: Conversation) -> str:
    """The conversation's share link, open to everyone logged in."""
    response = client_for(owner).put(
        f"/api/conversations/{conversation.pk}/share",
        {"everyone": True},
        content_type="application/json",
    )
    return str(response.json()["url"])


def conversation_of(owner: Any) -> Conversation:
    conversation = Conversation.objects.create(owner=owner, title="Tomatoes")
    first = Message.objects.create(conversation=conversation, role="user", content="Old prompt")
    Message.objects.create(
        conversation=conversation, parent=first, role="assistant", content="Old answer"
    )
    # A second version of the prompt: the link shows the newest branch only.
    again = Message.objects.create(conversation=conversation, role="user", content="When to plant?")
    Message.objects.create(
        conversation=conversation, parent=again, role="assistant", content="In **May**."
    )
    return conversation


def test_it_shares_with_chosen_users_then_everyone_and_revokes(owner: Any, outsider: Any) -> None:
    friend = get_user_model().objects.create_user("bob", password=PASSWORD)
    conversation = conversation_of(owner)
    api = f"/api/conversations/{conversation.pk}/share"
    mine = client_for(owner)
    assert mine.get(api).status_code == 404
    shared = mine.put(api, {"users": ["bob"]}, content_type="application/json")
    assert shared.status_code == 200
    link = shared.json()["url"]
    assert shared.json() == {"url": link, "everyone": False, "users": ["bob"]}

    page = client_for(friend).get(link)
    assert page.status_code == 200
    text = page.content.decode()
    assert "When to plant?" in text and "In **May**." in text
    assert "Old prompt" not in text
    assert client_for(owner).get(link).status_code == 200
    assert client_for(outsider).get(link).status_code == 404
    assert Client().get(link).status_code == 302  # logged out: the login page first

    # Only the owner shares or revokes; others cannot even see that it is shared.
    assert (
        client_for(outsider)
        .put(api, {"everyone": True}, content_type="application/json")
        .status_code
        == 404
    )
    assert client_for(friend).delete(api).status_code == 404

    # Everyone logged in, the same link.
    again = mine.put(api, {"everyone": True}, content_type="application/json")
    assert again.json()["url"] == link
    assert client_for(outsider).get(link).status_code == 200

    assert mine.delete(api).status_code == 204
    assert client_for(outsider).get(link).status_code == 404
    assert client_for(friend).get(link).status_code == 404
    assert mine.get(api).status_code == 404


def test_a_shared_answer_shows_its_thoughts_folded_and_escaped(owner: Any) -> None:
    conversation = conversation_of(owner)
    answer = conversation.messages.get(content="In **May**.")
    answer.reasoning = "Frost ends in <b>April</b>."
    answer.save()
    link = shared_with_everyone(owner, conversation)
    text = client_for(owner).get(link).content.decode()
    assert '<details class="thinking"' in text
    assert "Frost ends in &lt;b&gt;April&lt;/b&gt;." in text  # markdown.js renders it on the page
    assert text.index("Frost ends") < text.index("In **May**.")


def test_it_refuses_a_share_with_nobody_or_an_unknown_user(owner: Any) -> None:
    api = f"/api/conversations/{conversation_of(owner).pk}/share"
    mine = client_for(owner)
    nobody = mine.put(api, {"everyone": False, "users": []}, content_type="application/json")
    assert nobody.status_code == 400
    assert "name someone" in nobody.json()["error"]["message"]
    unknown = mine.put(api, {"users": ["zed"]}, content_type="application/json")
    assert unknown.status_code == 400
    assert "no user named zed" in unknown.json()["error"]["message"]
    assert mine.get(api).status_code == 404


def test_a_shared_answer_lists_the_sources_it_was_given_as_text(owner: Any, outsider: Any) -> None:
    conversation = conversation_of(owner)
    answer = conversation.messages.get(content="In **May**.")
    answer.content = "In **May** [1]."
    answer.citations = [
        {
            "n": 1,
            "document": 9999,  # deleted since, or never readable by whoever opens the link
            "name": "garden <img src=x onerror=alert(1)>.pdf",
            "page": 4,
            "passage": 12,
            "text": "Plant tomatoes after the last frost, <b>mid-May</b>.",
            "whole": False,
        }
    ]
    answer.save()
    link = shared_with_everyone(owner, conversation)
    text = client_for(outsider).get(link).content.decode()
    assert '<details class="shared-sources"><summary>Sources (1)</summary>' in text
    assert '<li value="1"><span class="source-name">garden &lt;img' in text
    assert ", page 4<blockquote" in text
    assert "after the last frost, &lt;b&gt;mid-May&lt;/b&gt;." in text
    assert "<img" not in text and "/api/documents/" not in text  # text only: no file reached
