"""Who may use which model (models_admin.access): a model open to chosen groups does not exist
for anyone else, on the chat page, the socket, /v1 and the conversation settings; staff manage
it on /models/ and in the admin."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from django.contrib.auth.models import Group
from django.test import Client

from chat.models import Message
from models_admin.models import LocalModel
from tests.chat.socket_client import open_socket
from tests.conftest import SECOND_MODEL
from wizweb.apikeys import apikey_create

pytestmark = pytest.mark.django_db(transaction=True)

MISSING = "No such model anywhere"


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def members_only(second_model: LocalModel, owner: Any) -> LocalModel:
    """The second model, open to the group "adults", of which the owner is a member."""
    adults = Group.objects.create(name="adults")
    owner.groups.add(adults)
    second_model.groups.set([adults])
    return second_model


def picker(user: Any) -> list[str]:
    page_data = logged_in(user).get("/").context["page_data"]
    return [m["name"] for m in page_data["models"]]


def same_but_for_the_name(hidden: str, missing: str) -> bool:
    return hidden.replace(SECOND_MODEL, "NAME") == missing.replace(MISSING, "NAME")


def test_it_opens_a_model_without_groups_to_everyone(
    second_model: LocalModel, default_model: LocalModel, outsider: Any
) -> None:
    assert picker(outsider) == [SECOND_MODEL, default_model.name]


def test_it_shows_a_members_only_model_to_members_and_staff_only(
    members_only: LocalModel, default_model: LocalModel, owner: Any, outsider: Any, staff: Any
) -> None:
    assert picker(owner) == [SECOND_MODEL, default_model.name]
    assert picker(staff) == [SECOND_MODEL, default_model.name]
    assert picker(outsider) == [default_model.name]


async def socket_error(user: Any, model: str) -> dict[str, Any]:
    socket = await open_socket(user)
    try:
        await socket.send_json_to(
            {"type": "prompt", "content": "hi", "options": {"model": model}, "client_id": 1}
        )
        frame = await socket.receive_json_from(timeout=10)
        while frame["type"] not in ("error", "accepted"):
            frame = await socket.receive_json_from(timeout=10)
        return frame
    finally:
        await socket.disconnect()


@pytest.mark.usefixtures("channel_layer_closed")
async def test_a_socket_prompt_for_it_is_answered_as_for_a_model_that_does_not_exist(
    members_only: LocalModel, outsider: Any
) -> None:
    hidden = await socket_error(outsider, SECOND_MODEL)
    missing = await socket_error(outsider, MISSING)
    assert hidden["type"] == missing["type"] == "error"
    assert hidden["code"] == missing["code"] == "model_not_found"
    assert same_but_for_the_name(hidden["message"], missing["message"])
    assert not await Message.objects.aexists()


def test_conversation_settings_naming_it_are_answered_as_for_a_model_that_does_not_exist(
    members_only: LocalModel, outsider: Any
) -> None:
    from chat.models import Conversation

    conversation = Conversation.objects.create(owner=outsider, title="t")
    client = logged_in(outsider)

    def patch(model: str) -> Any:
        return client.patch(
            f"/api/conversations/{conversation.id}/",
            json.dumps({"settings": {"model": model}}),
            content_type="application/json",
        )

    hidden, missing = patch(SECOND_MODEL), patch(MISSING)
    assert hidden.status_code == missing.status_code
    assert same_but_for_the_name(hidden.content.decode(), missing.content.decode())


@pytest.fixture
def api(web_server: str) -> Iterator[Any]:
    def client_of(user: Any) -> openai.OpenAI:
        secret = apikey_create(user=user, name="tests").secret
        return openai.OpenAI(base_url=f"{web_server}/v1", api_key=secret, max_retries=0)

    yield client_of


def test_v1_hides_it_from_outsiders_and_answers_it_as_a_missing_model(
    members_only: LocalModel, default_model: LocalModel, owner: Any, outsider: Any, api: Any
) -> None:
    with api(owner) as member, api(outsider) as stranger:
        assert [m.id for m in member.models.list()] == [SECOND_MODEL, default_model.name]
        assert [m.id for m in stranger.models.list()] == [default_model.name]
        errors = []
        for model in (SECOND_MODEL, MISSING):
            with pytest.raises(openai.NotFoundError) as caught:
                stranger.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
                )
            errors.append(caught.value)
    hidden, missing = errors
    assert hidden.status_code == missing.status_code == 404
    assert hidden.code == missing.code == "model_not_found"
    assert same_but_for_the_name(json.dumps(hidden.body), json.dumps(missing.body))


def test_an_outsider_whose_default_model_is_closed_gets_an_open_one(
    members_only: LocalModel, default_model: LocalModel, outsider: Any
) -> None:
    from chat.options import options_parse
    from chat.submission import prompt_submit

    adults = Group.objects.get(name="adults")
    LocalModel.objects.filter(pk=default_model.pk).update(is_default=False)
    LocalModel.objects.filter(pk=members_only.pk).update(is_default=True)
    members_only.groups.set([adults])
    accepted = prompt_submit(
        user=outsider, conversation_id=None, content="hi", options=options_parse({})
    )
    assert accepted.message.model_id == default_model.pk


def test_staff_set_the_groups_on_the_models_page(
    second_model: LocalModel, staff: Any, owner: Any, outsider: Any
) -> None:
    adults = Group.objects.create(name="adults")
    page = logged_in(staff).get("/models/").content.decode()
    assert 'name="groups"' in page and ">adults</option>" in page
    response = logged_in(staff).post(
        f"/models/{second_model.pk}/", {"action": "access", "groups": [str(adults.pk)]}
    )
    assert response.status_code == 302
    assert list(second_model.groups.all()) == [adults]
    assert SECOND_MODEL not in picker(outsider)
    response = logged_in(staff).post(f"/models/{second_model.pk}/", {"action": "access"})
    assert list(second_model.groups.all()) == []
    assert SECOND_MODEL in picker(outsider)


def test_only_staff_may_set_the_groups(second_model: LocalModel, owner: Any, outsider: Any) -> None:
    adults = Group.objects.create(name="adults")
    response = logged_in(outsider).post(
        f"/models/{second_model.pk}/", {"action": "access", "groups": [str(adults.pk)]}
    )
    assert response.status_code == 403
    assert list(second_model.groups.all()) == []


def test_staff_set_the_groups_in_the_admin(second_model: LocalModel, staff: Any) -> None:
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(*Permission.objects.filter(codename__endswith="_localmodel"))
    adults = Group.objects.create(name="adults")
    client = logged_in(staff)
    form = client.get(f"/admin/models_admin/localmodel/{second_model.pk}/change/")
    assert 'name="groups"' in form.content.decode()
    listing = client.get("/admin/models_admin/localmodel/").content.decode()
    assert "everyone" in listing
    second_model.groups.set([adults])
    listing = client.get("/admin/models_admin/localmodel/").content.decode()
    assert "adults" in listing


def test_staff_make_a_group_and_set_its_members_on_the_models_page(
    second_model: LocalModel, staff: Any, owner: Any, outsider: Any
) -> None:
    client = logged_in(staff)
    response = client.post("/models/groups/", {"name": "adults", "members": [str(owner.pk)]})
    assert response.status_code == 302 and response["Location"].endswith("#groups")
    adults = Group.objects.get(name="adults")
    assert list(adults.user_set.all()) == [owner]
    client.post(f"/models/{second_model.pk}/", {"action": "access", "groups": [str(adults.pk)]})
    assert SECOND_MODEL in picker(owner) and SECOND_MODEL not in picker(outsider)
    # Mallory joins: the model is now hers too; alice leaves: it is gone for her.
    client.post(f"/models/groups/{adults.pk}/", {"members": [str(outsider.pk)]})
    assert SECOND_MODEL in picker(outsider) and SECOND_MODEL not in picker(owner)
    page = client.get("/models/").content.decode()
    assert 'data-group="adults"' in page and "Save members" in page
    again = client.post("/models/groups/", {"name": "adults"}, follow=True).content.decode()
    assert "already a group named" in again
    assert Group.objects.count() == 1


def test_only_staff_may_make_groups_or_change_members(owner: Any, outsider: Any) -> None:
    adults = Group.objects.create(name="adults")
    client = logged_in(outsider)
    assert client.post("/models/groups/", {"name": "mine"}).status_code == 403
    assert (
        client.post(f"/models/groups/{adults.pk}/", {"members": [str(outsider.pk)]}).status_code
        == 403
    )
    assert list(Group.objects.values_list("name", flat=True)) == ["adults"]
    assert not adults.user_set.exists()
