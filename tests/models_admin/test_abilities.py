"""What the model-admin page says a model's chat template can do: think, and how thinking is
switched; call tools natively. Read from the GGUF's template, as the worker reads it."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.thinking_model import thinker_register

pytestmark = pytest.mark.django_db


def staff_page(staff: Any) -> str:
    client = Client()
    client.force_login(staff)
    return client.get("/models/").content.decode()


def test_it_shows_which_models_think_and_how_thinking_is_switched(
    staff: Any, default_model: Any
) -> None:
    thinker = thinker_register(default_model)
    assert thinker.template_abilities.thinks
    assert not default_model.template_abilities.thinks
    body = staff_page(staff)
    row = body.split(f'data-model="{thinker.pk}"', 1)[1].split("</tr>", 1)[0]
    assert "switched by its template (enable_thinking)" in row
    assert '<td data-field="tools">by grammar</td>' in row
    plain = body.split(f'data-model="{default_model.pk}"', 1)[1].split("</tr>", 1)[0]
    assert '<td data-field="thinks">no</td>' in plain


def test_the_models_page_stays_staff_only(owner: Any, default_model: Any) -> None:
    thinker_register(default_model)
    client = Client()
    client.force_login(owner)
    assert "enable_thinking" not in client.get("/models/").content.decode()
