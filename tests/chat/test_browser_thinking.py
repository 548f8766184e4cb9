"""A thinking model's thoughts on the chat page, in a real chromium against daphne and a real
worker: the block streams open while the model thinks, closes to "Thought for N s" when the
answer starts, opens again on a click, comes back after a reload, and renders its markdown
sanitised like an answer's. The model is the default GGUF with a Qwen3-style template
(tests.thinking_model), made to think by a response prefix that opens its block; the budget
closes the thinking so that the answer follows."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from chat.models import Conversation, Message
from models_admin.models import LocalModel
from tests.browser import ARTIFACTS
from tests.chat.test_browser import log_in, page
from tests.processes import Child
from tests.thinking_model import THINKER

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

__all__ = ["page"]  # the fixture, imported to be used here

# Markdown and hostile HTML at the start of the thoughts (the response prefix is the start of
# the answer, so the model's thoughts go on from it): the markdown must render, the HTML must
# show as text and run nothing.
HOSTILE = (
    "**Plan:** add `2+2` first.\n\n"
    '<img src=x onerror="window.pwned = 1"> <script>window.pwned = 2</script> '
    "[link](javascript:window.pwned=3)\n\n"
)
# A prompt the small model goes on writing about (a short question ends its thoughts with an
# end-of-turn before the budget closes them, and they are kept as the answer).
PROMPT = "Write a long story about a dragon who learns to bake bread, in many paragraphs."
THINKING = {
    "model": THINKER,
    "seed": 1,
    "temperature": 0,
    "max_tokens": 100,
    "response_prefix": f"<think>\n{HOSTILE}",
    # Long enough to be seen streaming, short enough to come before the model would stop by
    # itself; then the answer is forced to start.
    "reasoning_budget": 40,
}

# Every change of the thinking block, in order, as the page made it.
RECORD_BLOCK = """
window.thinkingSeen = [];
new MutationObserver(() => {
  const block = document.querySelector("li.message.assistant details.thinking");
  if (!block) return;
  const content = block.closest("li").querySelector(".content");
  window.thinkingSeen.push({
    state: block.dataset.state,
    open: block.open,
    summary: block.querySelector("summary").textContent,
    thoughts: block.querySelector(".thinking-body").textContent.length,
    answer: content.textContent.length,
  });
}).observe(document.getElementById("messages"), {
  subtree: true, childList: true, characterData: true, attributes: true,
});
"""


def thought_for(message: Message) -> str:
    """The block's summary for a saved answer, from the worker's measure of the thinking,
    rounded as JavaScript's toFixed and Math.round round (half up, on the float's exact value)."""
    seconds = Decimal(message.timings["reasoning_ms"] / 1000)
    shown = seconds.quantize(Decimal("0.1") if seconds < 10 else Decimal("1"), ROUND_HALF_UP)
    return f"Thought for {shown} s"


def assert_sanitised(block: Locator, page: Page) -> None:
    body = block.locator(".thinking-body")
    expect(body.locator("strong").first).to_have_text("Plan:")
    expect(body.locator("code").first).to_have_text("2+2")
    expect(body).to_contain_text('<img src=x onerror="window.pwned = 1">')
    expect(body).to_contain_text("<script>window.pwned = 2</script>")
    assert body.locator("img, script, svg, iframe, [onerror]").count() == 0
    assert body.locator("a[href^='javascript']").count() == 0
    assert page.evaluate("window.pwned") is None


def test_the_thinking_streams_collapses_expands_and_comes_back_after_a_reload(
    page: Page, web_server: str, owner: Any, thinker_worker: Child
) -> None:
    conversation = Conversation.objects.create(owner=owner, title="Sums", settings=THINKING)
    log_in(page, web_server)
    page.goto(f"{web_server}/c/{conversation.id}/")
    expect(page.locator("body[data-connected=true]")).to_be_attached(timeout=15_000)
    page.evaluate(RECORD_BLOCK)

    box = page.get_by_label("Message", exact=True)
    box.fill(PROMPT)
    box.press("Enter")
    answer = page.locator("li.message.assistant").last
    expect(answer).to_have_attribute("data-state", "done", timeout=120_000)
    message = Message.objects.get(pk=answer.get_attribute("data-message"))
    assert message.reasoning.startswith(HOSTILE.strip()), (message.content, message.note)
    assert message.content
    assert message.reasoning_tokens and message.reasoning_tokens >= THINKING["reasoning_budget"]

    # While it thought, the block was open, said "Thinking…" and grew with no answer yet; then
    # it closed to its time as the answer began.
    seen = page.evaluate("window.thinkingSeen")
    thinking = [s for s in seen if s["state"] == "thinking"]
    assert thinking and all(s["open"] and s["summary"] == "Thinking…" for s in thinking)
    assert all(s["answer"] == 0 for s in thinking)
    grown = sorted({s["thoughts"] for s in thinking if s["thoughts"]})
    assert len(grown) >= 2, f"the thoughts did not stream: {grown}"
    assert seen[-1]["state"] == "thought" and not seen[-1]["open"]

    block = answer.locator("details.thinking")
    expect(block).to_have_js_property("open", False)
    expect(block.locator("summary")).to_have_text(thought_for(message))
    expect(block.locator("summary")).to_have_text(re.compile(r"^Thought for \d+(\.\d)? s$"))
    expect(block.locator(".thinking-body")).to_be_hidden()
    # The answer is only the answer.
    expect(answer.locator(".content")).not_to_contain_text("Plan")
    page.screenshot(path=str(ARTIFACTS / "thinking-collapsed.png"))

    block.locator("summary").click()
    expect(block.locator(".thinking-body")).to_be_visible()
    assert_sanitised(block, page)
    page.screenshot(path=str(ARTIFACTS / "thinking-expanded.png"))

    # History: after a reload the saved thoughts show, closed, with the same time.
    page.reload()
    again = page.locator("li.message.assistant").last.locator("details.thinking")
    expect(again.locator("summary")).to_have_text(thought_for(message))
    expect(again).to_have_js_property("open", False)
    again.locator("summary").click()
    expect(again.locator(".thinking-body")).to_contain_text("Plan:")
    assert_sanitised(again, page)

    page.emulate_media(color_scheme="dark")
    page.evaluate("document.documentElement.dataset.theme = 'dark'")
    page.screenshot(path=str(ARTIFACTS / "thinking-expanded-dark.png"))


def test_a_reload_while_it_thinks_streams_the_thoughts_again_from_the_log(
    page: Page, web_server: str, owner: Any, thinker_worker: Child
) -> None:
    # Thinking long enough (about 150 tokens) that the reload comes while the answer is written.
    settings = {**THINKING, "reasoning_budget": 150, "max_tokens": 170}
    conversation = Conversation.objects.create(owner=owner, title="Long", settings=settings)
    log_in(page, web_server)
    page.goto(f"{web_server}/c/{conversation.id}/")
    expect(page.locator("body[data-connected=true]")).to_be_attached(timeout=15_000)
    box = page.get_by_label("Message", exact=True)
    box.fill(PROMPT)
    box.press("Enter")
    thinking = page.locator("li.message.assistant details.thinking[data-state=thinking]")
    expect(thinking).to_be_visible(timeout=60_000)

    page.add_init_script(f"addEventListener('DOMContentLoaded', () => {{ {RECORD_BLOCK} }});")
    page.reload()
    answer = page.locator("li.message.assistant").last
    expect(answer).to_have_attribute("data-state", "done", timeout=120_000)
    message = Message.objects.get(pk=answer.get_attribute("data-message"))
    assert message.reasoning and message.content
    # The reloaded page subscribed from the start: the log's reasoning chunks built the block
    # again, open and "Thinking…", before the answer's own chunks closed it.
    seen = page.evaluate("window.thinkingSeen")
    assert any(s["state"] == "thinking" and s["open"] and s["answer"] == 0 for s in seen), seen
    block = answer.locator("details.thinking")
    expect(block.locator("summary")).to_have_text(thought_for(message))
    expect(block).to_have_js_property("open", False)
    assert block.locator(".thinking-body").evaluate("b => b.textContent").startswith("Plan: add")
    expect(answer.locator(".content")).not_to_contain_text("Plan:")


def test_an_answer_that_did_not_think_has_no_block_and_an_unclosed_one_shows_its_note(
    page: Page, web_server: str, owner: Any
) -> None:
    conversation = Conversation.objects.create(owner=owner, title="Notes")
    question = Message.objects.create(conversation=conversation, role="user", content="Hi?")
    hello = Message.objects.create(
        conversation=conversation, parent=question, role="assistant", content="Hello."
    )
    second = Message.objects.create(
        conversation=conversation, parent=hello, role="user", content="And?"
    )
    Message.objects.create(
        conversation=conversation,
        parent=second,
        role="assistant",
        content="I was thinking about it and",
        note="The model began thinking and never finished; what it wrote is kept as the answer.",
        finish_reason="length",
    )
    log_in(page, web_server)
    page.goto(f"{web_server}/c/{conversation.id}/")
    answers = page.locator("li.message.assistant")
    expect(answers.last.locator(".content")).to_have_text("I was thinking about it and")
    expect(answers).to_have_count(2)
    expect(page.locator("details.thinking")).to_have_count(0)
    expect(answers.first.locator(".answer-note")).to_have_count(0)
    expect(answers.last.locator(".answer-note")).to_have_text(re.compile("never finished"))


def test_the_settings_offer_thinking_only_for_a_model_that_thinks(
    page: Page, web_server: str, owner: Any, default_model: LocalModel, thinker: LocalModel
) -> None:
    conversation = Conversation.objects.create(owner=owner, title="Switch", settings={})
    log_in(page, web_server)
    page.goto(f"{web_server}/c/{conversation.id}/")
    expect(page.locator("body[data-connected=true]")).to_be_attached(timeout=15_000)
    page.locator("#settings > summary").click()
    thinking = page.get_by_label("Thinking", exact=True)
    budget = page.get_by_label("Thinking budget")
    page.get_by_label("Model", exact=True).select_option(THINKER)
    expect(thinking).to_be_visible()
    thinking.select_option("off")
    budget.fill("32")
    expect(page.locator("#settings-summary")).to_contain_text("thinking budget 32")
    # Saved with the conversation as the server's options: a budget needs thinking on, and the
    # server says so in its own sentence.
    expect(page.locator("#settings-status")).to_contain_text("needs reasoning on")
    thinking.select_option("on")
    expect(page.locator("#settings-status")).to_have_text("")

    expect(page.locator("#settings-summary")).to_contain_text("thinking on")
    page.reload()
    expect(page.get_by_label("Thinking", exact=True)).to_have_value("on")
    expect(page.get_by_label("Thinking budget")).to_have_value("32")
    conversation.refresh_from_db()
    assert conversation.settings["reasoning"] is True
    assert conversation.settings["reasoning_budget"] == 32

    # A model that does not think: the fields stay only while they hold a value, with a note,
    # and a prompt is refused with the server's sentence instead of the option being dropped.
    page.get_by_label("Model", exact=True).select_option(default_model.name)
    expect(page.locator("#thinking-note")).to_contain_text("does not think")
    box = page.get_by_label("Message", exact=True)
    box.fill("Hello?")
    box.press("Enter")
    expect(page.locator("#status")).to_contain_text("does not think")
    assert not Message.objects.filter(conversation=conversation).exists()
    page.get_by_label("Thinking", exact=True).select_option("")
    page.get_by_label("Thinking budget").fill("")
    expect(page.get_by_label("Thinking", exact=True)).to_be_hidden()
    expect(page.locator("#thinking-note")).to_be_hidden()
