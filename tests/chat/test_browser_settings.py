"""The settings panel of the chat page in a real browser (chromium through Playwright, daphne,
and the real worker and model where a prompt is answered): what is chosen goes with the prompt,
is saved with the conversation, and comes back after a reload."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from chat.models import Conversation, Message, SystemPromptPreset
from models_admin.models import LocalModel
from tests.browser import ARTIFACTS
from tests.chat import test_browser
from tests.chat.test_browser import log_in
from tests.conftest import SECOND_MODEL

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

page = test_browser.page  # the browser fixture, as the other browser tests have it


def ready(page: Page) -> None:
    """Wait for the page's modules: chat.js connects only after sidebar.js and settings.js ran,
    and a control used before them would miss its listener."""
    expect(page.locator("body[data-connected=true]")).to_be_attached()


def wait_until(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        time.sleep(0.05)


def open_settings(page: Page) -> None:
    panel = page.locator("#settings")
    if panel.get_attribute("open") is None:
        panel.locator("summary").click()
    expect(page.get_by_label("Temperature")).to_be_visible()


def send(page: Page, text: str) -> Message:
    """Send a prompt from the composer and wait for its answer to be finished."""
    expect(page.locator("body[data-connected=true]")).to_be_attached()
    before = page.locator("li.message.assistant").count()
    prompt = page.get_by_label("Message")
    prompt.fill(text)
    prompt.press("Enter")
    answer = page.locator("li.message.assistant").nth(before)
    expect(answer).to_have_attribute("data-state", "done", timeout=90_000)
    return Message.objects.get(pk=answer.get_attribute("data-message"))


def saved_settings(conversation_id: Any) -> dict[str, Any]:
    return Conversation.objects.get(pk=conversation_id).settings


def test_the_settings_go_with_the_first_prompt_and_stay_with_the_conversation(
    page: Page, web_server: str, default_model: Any, inference_worker: Any
) -> None:
    log_in(page, web_server)
    ready(page)
    open_settings(page)
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Seed").fill("42")
    page.get_by_label("Max tokens").fill("5")
    expect(page.locator("#settings-summary")).to_have_text("temperature 0 · max tokens 5 · seed 42")
    page.screenshot(path=str(ARTIFACTS / "settings-desktop.png"))

    answer = send(page, "Tell me a long story about a brave knight and a dragon.")
    expected = {"model": default_model.name, "temperature": 0, "seed": 42, "max_tokens": 5}
    assert answer.options == expected
    assert answer.completion_tokens is not None and 1 <= answer.completion_tokens <= 5
    assert answer.finish_reason == "length"
    # Chosen before the conversation existed, saved once it did.
    wait_until(lambda: saved_settings(answer.conversation_id) == expected)

    page.reload()
    ready(page)
    open_settings(page)
    expect(page.get_by_label("Temperature")).to_have_value("0")
    expect(page.get_by_label("Seed")).to_have_value("42")
    expect(page.get_by_label("Max tokens")).to_have_value("5")
    expect(page.get_by_label("Top p")).to_have_value("")
    expect(page.get_by_label("Top p")).to_have_attribute("placeholder", "0.95")

    # In an open conversation a change is saved by itself; an emptied field goes back to the
    # default, which is what an empty field shows.
    page.get_by_label("Temperature").fill("0.3")
    page.get_by_label("Seed").fill("")
    wait_until(
        lambda: (
            saved_settings(answer.conversation_id)
            == {"model": default_model.name, "temperature": 0.3, "max_tokens": 5}
        )
    )
    again = send(page, "And then?")
    assert again.options == {"model": default_model.name, "temperature": 0.3, "max_tokens": 5}
    assert again.completion_tokens is not None and again.completion_tokens <= 5


def test_json_mode_gives_an_answer_that_parses(
    page: Page, web_server: str, default_model: Any, inference_worker: Any
) -> None:
    log_in(page, web_server)
    ready(page)
    open_settings(page)
    page.get_by_label("JSON mode").check()
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Max tokens").fill("200")
    expect(page.locator("#settings-summary")).to_contain_text("JSON")
    answer = send(page, "Describe a cat as a JSON object with its name and colour.")
    assert answer.options["response_format"] == {"type": "json_object"}
    assert answer.finish_reason == "stop", answer.content
    assert isinstance(json.loads(answer.content), dict)
    wait_until(
        lambda: (
            saved_settings(answer.conversation_id).get("response_format") == {"type": "json_object"}
        )
    )
    page.reload()
    ready(page)
    open_settings(page)
    expect(page.get_by_label("JSON mode")).to_be_checked()


PIRATE = "You are a pirate. Answer every question the way a pirate would, with plenty of arr."


def test_a_preset_saved_in_one_conversation_is_the_system_prompt_of_another(
    page: Page, web_server: str, owner: Any, default_model: Any, inference_worker: Any
) -> None:
    first = Conversation.objects.create(owner=owner, title="Where presets are made")
    log_in(page, web_server)
    ready(page)
    page.goto(f"{web_server}/c/{first.pk}/")
    ready(page)
    open_settings(page)
    page.get_by_label("System prompt").fill(PIRATE)

    page.get_by_role("button", name="Save as preset…").click()
    dialog = page.get_by_role("dialog", name="Save as preset")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Preset name").fill("Pirate")
    dialog.get_by_role("button", name="Save preset").click()
    expect(page.locator("#settings-status")).to_have_text("Saved the preset “Pirate”.")
    preset = SystemPromptPreset.objects.get(owner=owner)
    assert (preset.name, preset.text) == ("Pirate", PIRATE)
    expect(page.get_by_label("Preset", exact=True)).to_have_value(str(preset.pk))
    wait_until(lambda: saved_settings(first.pk).get("system_prompt") == PIRATE)

    # A new chat offers it; choosing it fills the system prompt, and the prompt goes with it.
    page.get_by_role("link", name="+ New chat").click()
    expect(page).to_have_url(f"{web_server}/")
    ready(page)
    open_settings(page)
    expect(page.get_by_label("System prompt")).to_have_value("")
    page.get_by_label("Preset", exact=True).select_option(label="Pirate")
    expect(page.get_by_label("System prompt")).to_have_value(PIRATE)
    answer = send(page, "Who are you?")
    assert answer.options["system_prompt"] == PIRATE
    assert answer.conversation_id != first.pk
    plain = Message.objects.filter(conversation=first).count()
    assert plain == 0  # the first conversation was never prompted
    wait_until(lambda: saved_settings(answer.conversation_id).get("system_prompt") == PIRATE)

    # Deleting the preset keeps the text where it is used.
    page.get_by_role("button", name="Delete preset").click()
    expect(page.locator("#settings-status")).to_contain_text("Deleted the preset “Pirate”")
    assert not SystemPromptPreset.objects.filter(owner=owner).exists()
    expect(page.get_by_label("System prompt")).to_have_value(PIRATE)
    expect(page.get_by_label("Preset", exact=True).locator("option")).to_have_count(1)


def test_a_value_out_of_range_is_refused_with_the_servers_sentence(
    page: Page, web_server: str, owner: Any, default_model: Any
) -> None:
    conversation = Conversation.objects.create(
        owner=owner, title="Careful", settings={"temperature": 0.5}
    )
    log_in(page, web_server)
    ready(page)
    page.goto(f"{web_server}/c/{conversation.pk}/")
    ready(page)
    open_settings(page)
    temperature = page.get_by_label("Temperature")
    expect(temperature).to_have_value("0.5")
    temperature.fill("5")
    status = page.locator("#settings-status")
    expect(status).to_have_text("Option 'temperature': must be between 0 and 2, not 5.")
    expect(temperature).to_have_attribute("aria-invalid", "true")
    assert saved_settings(conversation.pk) == {"temperature": 0.5}

    temperature.fill("1.5")
    expect(status).to_have_text("")
    wait_until(lambda: saved_settings(conversation.pk).get("temperature") == 1.5)
    expect(temperature).not_to_have_attribute("aria-invalid", "true")


def test_the_model_picker_offers_ready_models_only_and_marks_the_default(
    page: Page, web_server: str, owner: Any, default_model: Any, second_model: Any
) -> None:
    LocalModel.objects.create(name="Half downloaded", file="half.gguf", state="downloading")
    LocalModel.objects.create(name="Broken", file="broken.gguf", state="failed")
    conversation = Conversation.objects.create(
        owner=owner, title="Which model", settings={"model": "Broken"}
    )
    log_in(page, web_server)
    ready(page)
    page.goto(f"{web_server}/c/{conversation.pk}/")
    ready(page)
    open_settings(page)
    picker = page.get_by_label("Model", exact=True)
    assert sorted(picker.locator("option").all_inner_texts()) == sorted(
        [f"{default_model.name} (default)", SECOND_MODEL]
    )
    # The saved model is gone: the page says so and shows where prompts go instead.
    expect(picker).to_have_value(default_model.name)
    expect(page.locator("#model-note")).to_have_text(
        f"“Broken” is not ready; answers come from {default_model.name} unless you pick another."
    )
    events = page.evaluate_handle(
        """() => { const seen = [];
                   document.addEventListener("wiz:settings", () => seen.push(1));
                   return seen; }"""
    )
    picker.select_option(SECOND_MODEL)
    expect(page.locator("#model-note")).to_be_hidden()
    expect(page.locator("#settings-summary")).to_have_text("defaults")
    assert events.evaluate("seen => seen.length") >= 1
    wait_until(lambda: saved_settings(conversation.pk) == {"model": SECOND_MODEL})


EXAMPLES = [
    "Explain how a hash table works, with a small Python example.",
    "Write a polite email asking to move our meeting to Thursday.",
    "Give me three ideas for a quick vegetarian dinner.",
    "Summarise the text I paste next in five bullet points.",
]


def focused_label(page: Page) -> str:
    """The accessible name of the focused control, from its label, aria-label or text."""
    return page.evaluate(
        """() => { const e = document.activeElement;
                   const label = e.labels && e.labels[0] ? e.labels[0].textContent : null;
                   return (label || e.getAttribute("aria-label") || e.textContent).trim(); }"""
    )


def test_every_setting_has_a_label_and_is_reached_with_tab(
    page: Page, web_server: str, owner: Any, default_model: Any
) -> None:
    SystemPromptPreset.objects.create(owner=owner, name="Terse", text="Answer in one line.")
    log_in(page, web_server)
    ready(page)
    summary = page.locator("#settings > summary")
    summary.focus()
    summary.press("Enter")
    expect(page.get_by_label("Temperature")).to_be_visible()
    reached = []
    for _ in range(15):
        page.keyboard.press("Tab")
        reached.append(focused_label(page))
    assert reached == [
        "System prompt",  # the model picker is before the settings, in the header
        "Preset",
        "Save as preset…",  # "Delete preset" is skipped: no preset is chosen
        "Temperature",
        "Top p",
        "Top k",
        "Max tokens",
        "Seed",
        "JSON mode",
        "New chat",  # the end of the header
        *EXAMPLES,  # a new chat's example prompts
        "Message",  # then on to the composer
    ]
    summary.focus()
    page.keyboard.press("Shift+Tab")
    assert focused_label(page) == "Model"
    # From the keyboard: a preset chosen with the arrow keys fills the system prompt.
    page.get_by_label("Preset", exact=True).focus()
    page.keyboard.press("ArrowDown")
    expect(page.get_by_label("System prompt")).to_have_value("Answer in one line.")
    expect(page.get_by_role("button", name="Delete preset")).to_be_enabled()

    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.get_by_label("Message")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "settings-phone-open.png"))
    summary.click()
    expect(page.get_by_label("Temperature")).to_be_hidden()
    page.screenshot(path=str(ARTIFACTS / "settings-phone-closed.png"))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
