"""Markdown on the chat page in a real browser: answers rendered and sanitised, code highlighted
with a working Copy button, hostile text kept harmless, and a streamed answer rendered only where
it changes. Known text is written straight to the database; the streaming test uses the model."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, WebSocket, expect

from chat.models import Conversation, Message
from tests.browser import ARTIFACTS
from tests.chat.test_browser import log_in, markdown_words, shown_words

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CODE = '''def phase(day: int) -> str:
    """Name the Moon's phase on a day of its 29.53-day cycle."""
    names = ["new", "waxing crescent", "first quarter", "waxing gibbous", "full", "waning gibbous"]
    return names[round(day / 29.53 * 6) % 6]'''

ANSWER = f"""# Phases of the Moon

The Moon is **Earth's only natural satellite**; its mean radius is `1737.4 km`.

## What to watch

- It always shows the same face.
- Its light is *reflected* sunlight.

1. New moon
2. Full moon

| Phase | Days after new moon |
| --- | ---: |
| First quarter | 7 |
| Full moon | 15 |

```python
{CODE}
```

That is all."""

XSS = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(2)</script>",
    "[link](javascript:alert(3))",
]

# Counts, from the moment it is installed, how often the page rewrites each message's content:
# the messages already there (they must be left alone while an answer streams) and the answer
# being streamed (one rewrite per rendered frame).
WATCH_RENDERS = """() => {
  const earlier = [...document.querySelectorAll("#messages .content")];
  window.renders = { earlier: 0, streaming: 0 };
  new MutationObserver((records) => {
    for (const record of records) {
      if (earlier.some((content) => content.contains(record.target))) window.renders.earlier++;
      else if (record.target.matches?.("li.message.assistant.streaming > .content")) {
        window.renders.streaming++;
      }
    }
  }).observe(document.getElementById("messages"), {
    childList: true, subtree: true, characterData: true,
  });
}"""

# What the page's own renderer makes of a text from scratch.
RENDER_FRESH = """async (text) => {
  const { renderMarkdown } = await import("/static/chat/markdown.js");
  const element = document.createElement("div");
  renderMarkdown(element, text);
  return element.innerHTML;
}"""


@pytest.fixture
def page(owner: User, default_model: Any, web_server: str, browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=web_server)
    yield context.new_page()
    context.close()


def conversation_with(owner: User, *turns: tuple[str, str]) -> Conversation:
    """A finished conversation written straight to the database, so its text is known."""
    conversation = Conversation.objects.create(owner=owner, title="Rendering")
    parent = None
    for role, content in turns:
        parent = Message.objects.create(
            conversation=conversation,
            parent=parent,
            role=role,
            content=content,
            state=Message.State.DONE,
            finish_reason="stop" if role == Message.Role.ASSISTANT else "",
        )
    return conversation


def open_conversation(page: Page, web_server: str, conversation: Conversation) -> None:
    log_in(page, web_server)
    page.goto(f"{web_server}/c/{conversation.id}/")
    expect(page.locator("li.message.assistant").last).to_have_attribute("data-state", "done")


def test_it_renders_markdown_and_highlights_code_with_a_copy_button(
    page: Page, web_server: str, owner: User
) -> None:
    conversation = conversation_with(
        owner, ("user", "Tell me about the Moon."), ("assistant", ANSWER)
    )
    open_conversation(page, web_server, conversation)

    content = page.locator("li.message.assistant").last.locator(".content")
    expect(content.locator("h1")).to_have_text("Phases of the Moon")
    expect(content.locator("h2")).to_have_text("What to watch")
    expect(content.locator("strong")).to_have_text("Earth's only natural satellite")
    expect(content.locator("em")).to_have_text("reflected")
    expect(content.locator("p > code")).to_have_text("1737.4 km")
    expect(content.locator("ul > li")).to_have_text(
        ["It always shows the same face.", "Its light is reflected sunlight."]
    )
    expect(content.locator("ol > li")).to_have_text(["New moon", "Full moon"])
    expect(content.locator("table th")).to_have_text(["Phase", "Days after new moon"])
    expect(content.locator("table td")).to_have_text(["First quarter", "7", "Full moon", "15"])
    expect(content.locator("table td").nth(1)).to_have_attribute("align", "right")

    code = content.locator(".code-block pre > code")
    expect(code).to_have_class(re.compile(r"(?=.*\blanguage-python\b)(?=.*\bhljs\b)"))
    expect(code.locator(".hljs-keyword").first).to_have_text("def")
    expect(code.locator(".hljs-title.function_")).to_have_text("phase")
    expect(code.locator(".hljs-string").first).to_contain_text("Name the Moon's phase")
    expect(content.locator(".code-language")).to_have_attribute("data-label", "python")

    shown = content.inner_text()
    assert shown_words(shown) == markdown_words(ANSWER)
    for markup in ("**", "```", "# ", "| ---", "`1737"):
        assert markup not in shown
    # The bar's labels are drawn by CSS, so the answer's text holds only the answer.
    assert "Copy" not in shown and "python" not in shown

    copy = content.get_by_role("button", name="Copy code")
    copy.click()
    expect(content.locator(".copy-code")).to_have_attribute("data-label", "Copied")
    assert page.evaluate("navigator.clipboard.readText()") == CODE
    expect(content.locator(".copy-code")).to_have_attribute("data-label", "Copy")

    page.screenshot(path=str(ARTIFACTS / "markdown-desktop.png"))

    # On a phone the long code line scrolls inside its block; the page itself never scrolls
    # sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    code.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "markdown-phone.png"))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert code.evaluate("code => code.scrollWidth > code.clientWidth")
    assert code.evaluate("code => getComputedStyle(code).overflowX") == "auto"


def test_it_copies_code_without_the_clipboard_api(page: Page, web_server: str, owner: User) -> None:
    # Over plain http at a LAN address the page is not a secure context and has no
    # navigator.clipboard; make its writeText fail so that the fallback has to do the copying.
    page.add_init_script(
        "navigator.clipboard.writeText = () => Promise.reject(new Error('not allowed'));"
    )
    conversation = conversation_with(owner, ("user", "Code?"), ("assistant", f"```\n{CODE}\n```"))
    open_conversation(page, web_server, conversation)

    content = page.locator("li.message.assistant").last.locator(".content")
    expect(content.locator("pre > code")).not_to_have_class(re.compile(r"language-"))
    content.get_by_role("button", name="Copy code").click()
    expect(content.locator(".copy-code")).to_have_attribute("data-label", "Copied")
    assert page.evaluate("navigator.clipboard.readText()") == CODE


def test_it_keeps_html_and_script_links_harmless_in_answers_and_prompts(
    page: Page, web_server: str, owner: User
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    prompt = " ".join(XSS)
    answer = "\n\n".join(
        [
            "Here you are:",
            *XSS,
            '<a href="javascript:alert(4)">raw link</a> <svg onload=alert(5)></svg>',
            "[The Moon](https://example.org/moon) ![photo](javascript:alert(6))",
            "[spaced](java\tscript:alert(7)) [data](data:text/html,alert(8))",
        ]
    )
    conversation = conversation_with(owner, ("user", prompt), ("assistant", answer))
    open_conversation(page, web_server, conversation)
    page.wait_for_load_state("networkidle")

    expect(page.locator("li.message.user").last.locator(".content")).to_have_text(prompt)
    content = page.locator("li.message.assistant").last.locator(".content")
    shown = content.inner_text()
    assert "<img src=x onerror=alert(1)>" in shown
    assert "<script>alert(2)</script>" in shown
    assert '<a href="javascript:alert(4)">raw link</a>' in shown

    messages = page.locator("#messages")
    # In what the messages say (the page's own icons, under them, are SVG).
    said = messages.locator(".content")
    assert said.locator("img, script, svg, iframe, object, embed").count() == 0
    assert page.locator('a[href^="javascript:" i], a[href^="data:" i]').count() == 0
    handlers = messages.evaluate(
        """list => [...list.querySelectorAll("*")].flatMap(
             element => [...element.attributes].map(a => a.name).filter(n => n.startsWith("on")))"""
    )
    assert handlers == []
    links = content.locator("a[href]")
    expect(links).to_have_count(1)
    expect(links).to_have_attribute("href", "https://example.org/moon")
    expect(links).to_have_attribute("target", "_blank")
    expect(links).to_have_attribute("rel", "noopener noreferrer")

    # The dialog handler works, and nothing before this raised a dialog.
    page.evaluate("alert('probe')")
    assert dialogs == ["probe"]


def test_it_renders_a_streamed_answer_as_its_saved_text_and_leaves_history_alone(
    page: Page, web_server: str, inference_worker: Any, owner: User
) -> None:
    earlier = f"Here is the code:\n\n```python\n{CODE}\n```"
    conversation = conversation_with(owner, ("user", "Moon code, please."), ("assistant", earlier))
    received: list[dict[str, Any]] = []

    def watch(socket: WebSocket) -> None:
        socket.on("framereceived", lambda payload: received.append(json.loads(payload)))

    page.on("websocket", watch)
    open_conversation(page, web_server, conversation)
    expect(page.locator("body[data-connected=true]")).to_be_attached()
    page.evaluate(WATCH_RENDERS)

    prompt = page.get_by_label("Message")
    prompt.fill("List three facts about the Moon as a markdown list with bold words.")
    prompt.press("Enter")
    answer = page.locator("li.message.assistant").last
    expect(answer).to_have_attribute("data-state", "done", timeout=60_000)

    saved = Message.objects.get(pk=answer.get_attribute("data-message"))
    chunks = [f for f in received if f["type"] == "chunk" and f["message"] == str(saved.pk)]
    done = next(f for f in received if f["type"] == "done" and f["message"] == str(saved.pk))
    assert len(chunks) >= 2, "the answer arrived in one piece, not streamed"
    assert saved.state == Message.State.DONE
    assert done["content"] == saved.content
    shown = answer.locator(".content").inner_text()
    assert shown.strip()
    assert shown_words(shown) == markdown_words(saved.content)
    # The page ends exactly where rendering the saved text from scratch would: no chunk lost,
    # none doubled, no half-rendered frame left behind.
    assert answer.locator(".content").inner_html() == page.evaluate(RENDER_FRESH, saved.content)

    renders = page.evaluate("window.renders")
    assert renders["earlier"] == 0, "the history was re-rendered while the answer streamed"
    assert 1 <= renders["streaming"] <= len(chunks), renders
    earlier_code = page.locator("li.message.assistant").first.locator("pre > code")
    expect(earlier_code).to_have_class(re.compile(r"\bhljs\b"))
    page.screenshot(path=str(ARTIFACTS / "markdown-streamed.png"))
