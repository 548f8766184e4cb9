"""The JSON API of a user's own history, with session or API-key auth."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from chat.api import PAGE_SIZE
from chat.models import Conversation, Message, SystemPromptPreset
from wizweb.apikeys import apikey_create

pytestmark = pytest.mark.django_db


def bearer(user: Any) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {apikey_create(user=user, name='t').secret}"}


@pytest.fixture
def conversation(owner: Any) -> Conversation:
    conversation = Conversation.objects.create(owner=owner, title="Moon talk")
    question = Message.objects.create(conversation=conversation, role="user", content="The moon?")
    Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content="It is **bright**.",
        model_name="SmolLM2",
        prompt_tokens=10,
        completion_tokens=5,
    )
    return conversation


def test_it_lists_the_owners_conversations_in_pages(owner: Any, outsider: Any) -> None:
    for i in range(PAGE_SIZE + 3):
        Conversation.objects.create(owner=owner, title=f"c{i}")
    Conversation.objects.create(owner=outsider, title="not yours")
    Conversation.objects.create(owner=owner, title="hidden api call", in_history=False)
    client = Client()
    first = client.get("/api/conversations/", **bearer(owner)).json()
    assert first["count"] == PAGE_SIZE + 3
    assert len(first["results"]) == PAGE_SIZE
    assert first["next"] == "?page=2"
    second = client.get("/api/conversations/?page=2", **bearer(owner)).json()
    assert len(second["results"]) == 3
    titles = {r["title"] for r in first["results"] + second["results"]}
    assert "not yours" not in titles and "hidden api call" not in titles
    assert client.get("/api/conversations/?page=9", **bearer(owner)).status_code == 400


def test_it_shows_one_conversation_with_its_messages(owner: Any, conversation: Any) -> None:
    client = Client()
    client.force_login(owner)  # a session works as well as a key
    body = client.get(f"/api/conversations/{conversation.id}/").json()
    assert body["title"] == "Moon talk"
    assert [m["content"] for m in body["messages"]] == ["The moon?", "It is **bright**."]
    assert body["messages"][1]["usage"]["total_tokens"] == 15


def test_it_exports_markdown_and_json(owner: Any, conversation: Any) -> None:
    client = Client()
    markdown = client.get(f"/api/conversations/{conversation.id}/export?format=md", **bearer(owner))
    assert markdown["Content-Type"].startswith("text/markdown")
    assert "attachment" in markdown["Content-Disposition"]
    text = markdown.content.decode()
    assert text.startswith("# Moon talk")
    assert "**You:**\n\nThe moon?" in text
    assert "**Assistant (SmolLM2):**\n\nIt is **bright**." in text
    exported = client.get(
        f"/api/conversations/{conversation.id}/export?format=json", **bearer(owner)
    )
    assert json.loads(exported.content)["messages"][0]["content"] == "The moon?"
    bad = client.get(f"/api/conversations/{conversation.id}/export?format=pdf", **bearer(owner))
    assert bad.status_code == 400


def test_it_gives_an_outsider_404(outsider: Any, conversation: Any) -> None:
    client = Client()
    for url in (
        f"/api/conversations/{conversation.id}/",
        f"/api/conversations/{conversation.id}/export?format=md",
    ):
        response = client.get(url, **bearer(outsider))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_it_answers_401_without_a_session_or_key(conversation: Any) -> None:
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wiz-wrong"}):
        response = Client().get("/api/conversations/", **headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"


def test_it_searches_titles_and_message_text(owner: Any, outsider: Any) -> None:
    tea = Conversation.objects.create(owner=owner, title="About tea")
    other = Conversation.objects.create(owner=owner, title="Plans")
    Message.objects.create(conversation=other, role="user", content="Where do PENGUINS live?")
    Conversation.objects.create(owner=outsider, title="penguins too")
    client = Client()
    found = client.get("/api/conversations/?q=penguins", **bearer(owner)).json()["results"]
    assert [r["id"] for r in found] == [str(other.id)]
    found = client.get("/api/conversations/?q=tea", **bearer(owner)).json()["results"]
    assert [r["id"] for r in found] == [str(tea.id)]


def test_it_renames_and_deletes_a_conversation(
    owner: Any, outsider: Any, conversation: Any
) -> None:
    client = Client()
    url = f"/api/conversations/{conversation.id}/"
    assert (
        client.patch(
            url, {"title": "x"}, content_type="application/json", **bearer(outsider)
        ).status_code
        == 404
    )
    renamed = client.patch(
        url, {"title": "Lunar notes"}, content_type="application/json", **bearer(owner)
    )
    assert renamed.json()["title"] == "Lunar notes"
    assert (
        client.patch(
            url, {"title": ""}, content_type="application/json", **bearer(owner)
        ).status_code
        == 400
    )
    assert client.delete(url, **bearer(outsider)).status_code == 404
    assert client.delete(url, **bearer(owner)).status_code == 204
    assert not Conversation.objects.filter(pk=conversation.id).exists()
    assert not Message.objects.filter(conversation_id=conversation.id).exists()


def test_a_browser_session_needs_the_csrf_token_to_change_things(
    owner: Any, conversation: Any
) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    url = f"/api/conversations/{conversation.id}/"
    assert client.delete(url).status_code == 403
    client.get("/")  # the page sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    assert client.delete(url, HTTP_X_CSRFTOKEN=token).status_code == 204


def test_its_exports_and_imports_keep_a_thinking_answers_reasoning_apart(
    owner: Any, conversation: Any
) -> None:
    answer = conversation.messages.get(role="assistant")
    answer.reasoning = "The moon reflects the *sun*."
    answer.reasoning_tokens = 7
    answer.save()
    client = Client()
    text = client.get(
        f"/api/conversations/{conversation.id}/export?format=md", **bearer(owner)
    ).content.decode()
    assert (
        "**Assistant (SmolLM2):**\n\n<details><summary>Thinking</summary>\n\n"
        "The moon reflects the *sun*.\n\n</details>\n\nIt is **bright**." in text
    )
    assert "Thinking" not in text.split("**You:**")[1].split("**Assistant")[0]
    exported = client.get(
        f"/api/conversations/{conversation.id}/export?format=json", **bearer(owner)
    )
    shown = json.loads(exported.content)["messages"][1]
    assert (shown["content"], shown["reasoning"]) == (
        "It is **bright**.",
        "The moon reflects the *sun*.",
    )
    imported = client.post(
        "/api/conversations/", exported.content, content_type="application/json", **bearer(owner)
    )
    copy = Conversation.objects.get(pk=imported.json()["id"]).messages.get(role="assistant")
    assert (copy.content, copy.reasoning) == ("It is **bright**.", "The moon reflects the *sun*.")


def test_it_imports_its_own_json_export_with_branches(owner: Any, conversation: Any) -> None:
    question = conversation.messages.get(role="user")
    Message.objects.create(
        conversation=conversation, parent=question, role="assistant", content="A second version."
    )
    client = Client()
    exported = client.get(
        f"/api/conversations/{conversation.id}/export?format=json", **bearer(owner)
    )
    imported = client.post(
        "/api/conversations/", exported.content, content_type="application/json", **bearer(owner)
    )
    assert imported.status_code == 201
    copy = Conversation.objects.get(pk=imported.json()["id"])
    # The copy is told apart from the original in the sidebar.
    assert copy.pk != conversation.pk and copy.title == "Moon talk (imported)"
    new_question = copy.messages.get(role="user")
    assert sorted(new_question.children.values_list("content", flat=True)) == [
        "A second version.",
        "It is **bright**.",
    ]
    bad = client.post(
        "/api/conversations/",
        {"messages": [{"role": "wizard"}]},
        content_type="application/json",
        **bearer(owner),
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_import"


def test_it_pins_a_conversation_to_the_top_of_the_list(
    owner: Any, outsider: Any, conversation: Any
) -> None:
    newer = Conversation.objects.create(owner=owner, title="Newer")
    client = Client()

    def titles() -> list[str]:
        listed = client.get("/api/conversations/", **bearer(owner)).json()["results"]
        return [c["title"] for c in listed]

    assert titles() == ["Newer", "Moon talk"]
    url = f"/api/conversations/{conversation.id}/"
    pinned = client.patch(url, {"pinned": True}, content_type="application/json", **bearer(owner))
    assert pinned.status_code == 200 and pinned.json()["pinned"] is True
    assert titles() == ["Moon talk", "Newer"]
    bad = client.patch(url, {"pinned": "yes"}, content_type="application/json", **bearer(owner))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_pinned"
    theirs = client.patch(
        f"/api/conversations/{newer.id}/",
        {"pinned": True},
        content_type="application/json",
        **bearer(outsider),
    )
    assert theirs.status_code == 404
    newer.refresh_from_db()
    assert not newer.pinned
    client.patch(url, {"pinned": False}, content_type="application/json", **bearer(owner))
    assert titles() == ["Newer", "Moon talk"]


def test_it_says_trimmed_null_when_no_message_was_left_out(owner: Any, conversation: Any) -> None:
    answer = conversation.messages.get(role="assistant")
    client = Client()
    body = client.get(f"/api/conversations/{conversation.id}/", **bearer(owner)).json()
    assert [m["trimmed"] for m in body["messages"]] == [None, None]
    answer.trimmed = {"turns": 2, "tokens": 90}
    answer.save()
    body = client.get(f"/api/conversations/{conversation.id}/", **bearer(owner)).json()
    assert body["messages"][1]["trimmed"] == {"turns": 2, "tokens": 90}


def test_it_imports_an_export_without_parents_as_one_thread(owner: Any) -> None:
    export = {
        "title": "Hand-written",
        "messages": [
            {"role": "user", "content": "Hi."},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "And?"},
            {"role": "assistant", "content": "That is all."},
        ],
    }
    response = Client().post(
        "/api/conversations/", export, content_type="application/json", **bearer(owner)
    )
    assert response.status_code == 201
    messages = response.json()["messages"]
    assert [m["content"] for m in messages] == ["Hi.", "Hello.", "And?", "That is all."]
    assert messages[0]["parent"] is None
    assert [m["parent"] for m in messages[1:]] == [m["id"] for m in messages[:-1]]


def test_it_imports_the_settings_and_marks_a_second_copys_title(
    owner: Any, outsider: Any, conversation: Any
) -> None:
    conversation.settings = {
        "system_prompt": "Answer in French.",
        "temperature": 0.3,
        "seed": 7,
        "response_format": {"type": "json_object"},
    }
    conversation.save()
    client = Client()
    exported = client.get(
        f"/api/conversations/{conversation.id}/export?format=json", **bearer(owner)
    ).json()
    exported["settings"]["no_such_option"] = 1  # from another version: left out, not refused
    exported["settings"]["top_p"] = 5  # out of range: left out
    titles = []
    for _ in range(2):
        response = client.post(
            "/api/conversations/", exported, content_type="application/json", **bearer(owner)
        )
        assert response.status_code == 201
        assert response.json()["settings"] == conversation.settings
        titles.append(response.json()["title"])
    assert titles == ["Moon talk (imported)", "Moon talk (imported 2)"]
    # Another user's titles do not count.
    theirs = client.post(
        "/api/conversations/", exported, content_type="application/json", **bearer(outsider)
    )
    assert theirs.json()["title"] == "Moon talk"


def test_it_imports_only_tool_calls_in_openais_shape(owner: Any) -> None:
    good = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    export = {
        "title": "Calls",
        "messages": [
            {"role": "user", "content": "Call it."},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [good, {"function": "f"}, "call", {"function": {"name": 3}}],
            },
        ],
    }
    response = Client().post(
        "/api/conversations/", export, content_type="application/json", **bearer(owner)
    )
    assert response.status_code == 201
    answer = Message.objects.get(conversation_id=response.json()["id"], role="assistant")
    assert answer.tool_calls == [good]


def test_it_imports_an_export_larger_than_djangos_limit_for_forms(owner: Any) -> None:
    from django.conf import settings

    text = "x" * 100_000
    export = {
        "title": "Long",
        "messages": [{"role": "user", "content": text} for _ in range(30)],
    }
    body = json.dumps(export)
    assert len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    client = Client()
    client.force_login(owner)
    client.get("/")
    token = client.cookies["csrftoken"].value
    response = client.post(
        "/api/conversations/", body, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 201
    copy = Conversation.objects.get(pk=response.json()["id"])
    assert copy.messages.count() == 30 and copy.messages.first().content == text


def test_it_saves_conversation_settings_checked_as_options(owner: Any, conversation: Any) -> None:
    client = Client()
    url = f"/api/conversations/{conversation.id}/"
    values = {
        "temperature": 0.3,
        "top_k": 20,
        "system_prompt": "Be brief.",
        "response_format": {"type": "json_object"},
        "seed": 7,
    }
    saved = client.patch(
        url, {"settings": values}, content_type="application/json", **bearer(owner)
    )
    assert saved.json()["settings"] == values
    bad = client.patch(
        url, {"settings": {"temperature": 9}}, content_type="application/json", **bearer(owner)
    )
    assert bad.status_code == 400
    assert "temperature" in bad.json()["error"]["message"]
    conversation.refresh_from_db()
    assert conversation.settings == values


def test_it_keeps_a_users_system_prompt_presets(owner: Any, outsider: Any) -> None:
    client = Client()
    made = client.post(
        "/api/presets/",
        {"name": "Pirate", "text": "Talk like a pirate."},
        content_type="application/json",
        **bearer(owner),
    )
    assert made.status_code == 201
    again = client.post(
        "/api/presets/",
        {"name": "Pirate", "text": "Arr."},
        content_type="application/json",
        **bearer(owner),
    )
    assert again.json()["id"] == made.json()["id"]
    listed = client.get("/api/presets/", **bearer(owner)).json()["results"]
    assert listed == [{"id": made.json()["id"], "name": "Pirate", "text": "Arr.", "default": False}]
    assert client.get("/api/presets/", **bearer(outsider)).json()["results"] == []
    url = f"/api/presets/{made.json()['id']}/"
    assert client.delete(url, **bearer(outsider)).status_code == 404
    assert client.delete(url, **bearer(owner)).status_code == 204
    empty = client.post(
        "/api/presets/", {"name": "", "text": "x"}, content_type="application/json", **bearer(owner)
    )
    assert empty.status_code == 400


UNREADABLE_BODIES = [
    ("not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    # json.loads raises RecursionError, not ValueError, this deep.
    ('{"title": ' + "[" * 100_000 + "]" * 100_000 + "}", "levels deep"),
    ('{"title": "x", "deep": ' + "[" * 65 + "]" * 65 + "}", "levels deep"),
    # Parses, then cannot be written to the database as UTF-8.
    ('{"title": "moon \\ud800", "name": "\\udfff", "text": "x", "messages": []}', "surrogate"),
]


@pytest.mark.parametrize(("body", "says"), UNREADABLE_BODIES)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("patch", "/api/conversations/{id}/"),
        ("post", "/api/conversations/"),
        ("post", "/api/presets/"),
    ],
)
def test_it_answers_400_to_a_body_it_cannot_read(
    owner: Any, conversation: Any, method: str, path: str, body: str, says: str
) -> None:
    client = Client(raise_request_exception=False)
    response = getattr(client, method)(
        path.format(id=conversation.id), body, content_type="application/json", **bearer(owner)
    )
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "invalid_json"
    assert says in error["message"]
    conversation.refresh_from_db()
    assert conversation.title == "Moon talk"
    assert Conversation.objects.count() == 1
    assert not SystemPromptPreset.objects.exists()


def test_it_makes_one_preset_the_default_for_new_chats(owner: Any, outsider: Any) -> None:
    pirate = SystemPromptPreset.objects.create(owner=owner, name="Pirate", text="Arr.")
    poet = SystemPromptPreset.objects.create(owner=owner, name="Poet", text="Rhyme.")
    theirs = SystemPromptPreset.objects.create(owner=outsider, name="Mine", text="Mine.")
    client = Client()

    def mark(preset: SystemPromptPreset, user: Any, default: Any) -> Any:
        return client.patch(
            f"/api/presets/{preset.pk}/",
            {"default": default},
            content_type="application/json",
            **bearer(user),
        )

    assert mark(pirate, owner, True).json()["default"] is True
    assert mark(poet, owner, True).json() == {
        "id": poet.pk,
        "name": "Poet",
        "text": "Rhyme.",
        "default": True,
    }
    assert list(SystemPromptPreset.objects.filter(is_default=True)) == [poet]
    # Another's preset is not found; a default that is not a boolean is refused.
    assert mark(theirs, owner, True).status_code == 404
    assert mark(poet, outsider, False).status_code == 404
    assert mark(poet, owner, "yes").status_code == 400
    assert SystemPromptPreset.objects.get(pk=poet.pk).is_default

    # A new chat's page starts with its system prompt; an existing conversation keeps its own.
    browser = Client()
    browser.force_login(owner)
    assert browser.get("/").context["page_data"]["settings"] == {"system_prompt": "Rhyme."}
    existing = Conversation.objects.create(owner=owner, settings={"temperature": 0.5})
    page = browser.get(f"/c/{existing.pk}/").context["page_data"]
    assert page["settings"] == {"temperature": 0.5}
    other = Client()
    other.force_login(outsider)
    assert other.get("/").context["page_data"]["settings"] == {}

    assert mark(poet, owner, False).json()["default"] is False
    assert browser.get("/").context["page_data"]["settings"] == {}
