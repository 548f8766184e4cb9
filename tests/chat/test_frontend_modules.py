"""The chat page's pure modules (static/chat/tree.js) in a real chromium, without the server:
Playwright answers the page's requests from static/ on disk, so these run in a second and
need no database, daphne or worker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route

pytestmark = pytest.mark.browser

STATIC = Path(__file__).resolve().parents[2] / "static"
ORIGIN = "http://wiz.test"


def _serve(route: Route) -> None:
    path = route.request.url.removeprefix(ORIGIN)
    if path == "/":
        route.fulfill(body="<!doctype html><title>modules</title>", content_type="text/html")
        return
    file = (STATIC / path.removeprefix("/static/")).resolve()
    if not file.is_relative_to(STATIC) or not file.is_file():
        route.fulfill(status=404)
        return
    route.fulfill(body=file.read_bytes(), content_type="text/javascript")


@pytest.fixture(scope="module")
def modules(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.route(f"{ORIGIN}/**", _serve)
    page.goto(f"{ORIGIN}/")
    yield page
    context.close()


def run(page: Page, body: str, *args: Any) -> Any:
    """Evaluate `body` (an async function of `tree`, the module, and the args) in the page."""
    script = f"""async (args) => {{
        const tree = await import("/static/chat/tree.js");
        return await (async (tree, ...args) => {{ {body} }})(tree, ...args);
    }}"""
    return page.evaluate(script, list(args))


def msg(id_: str, role: str, parent: str | None, **more: Any) -> dict[str, Any]:
    return {"id": id_, "role": role, "parent": parent, "content": f"text of {id_}", **more}


def build(messages: list[dict[str, Any]]) -> str:
    """JavaScript making `t`, a MessageTree holding these messages in this order."""
    return f"const t = new tree.MessageTree(); for (const m of {json.dumps(messages)}) t.add(m);"


CONVERSATION = [
    msg("u1", "user", None),
    msg("a1", "assistant", "u1", state="done"),
    msg("u2", "user", "a1"),
    msg("a2", "assistant", "u2", state="done"),
    msg("a2b", "assistant", "u2", state="done"),  # a regenerated answer: newest
    msg("u2b", "user", "a1"),  # an edit of the second prompt, newer still
    msg("a3", "assistant", "u2b", state="running"),
]


def test_the_shown_branch_follows_the_newest_message_unless_a_version_was_chosen(
    modules: Page,
) -> None:
    assert run(modules, build(CONVERSATION) + "return t.shownPath();") == [
        "u1",
        "a1",
        "u2b",
        "a3",
    ]
    chosen = build(CONVERSATION) + 't.choose("u2"); return t.shownPath();'
    # Under the chosen prompt, the newest of its answers.
    assert run(modules, chosen) == ["u1", "a1", "u2", "a2b"]
    older = build(CONVERSATION) + 't.choose("u2"); t.choose("a2"); return t.shownPath();'
    assert run(modules, older) == ["u1", "a1", "u2", "a2"]
    assert run(modules, build(CONVERSATION) + 'return t.siblings("u2b");') == ["u2", "u2b"]
    assert run(modules, "return new tree.MessageTree().shownPath();") == []


def test_a_message_added_twice_is_one_version(modules: Page) -> None:
    twice = [*CONVERSATION[:2], CONVERSATION[1]]
    assert run(modules, build(twice) + 'return t.siblings("a1");') == ["a1"]


def test_the_answer_being_written_is_found_only_at_the_end_of_the_shown_branch(
    modules: Page,
) -> None:
    assert run(modules, build(CONVERSATION) + "return t.streamingOnPath();") == "a3"
    other = build(CONVERSATION) + 't.choose("u2"); return t.streamingOnPath();'
    assert run(modules, other) is None


def test_used_tokens_are_the_last_real_count_plus_estimates_after_it(modules: Page) -> None:
    answered = [
        msg("u1", "user", None),
        msg("a1", "assistant", "u1", state="done", usage={"total_tokens": 120}),
    ]
    assert run(modules, build(answered) + "return t.usedTokens();") == {
        "tokens": 120,
        "exact": True,
    }
    # 35 characters after the counted answer: 10 tokens and 8 for the turn's markers.
    later = [*answered, {**msg("u2", "user", "a1"), "content": "x" * 35}]
    assert run(modules, build(later) + "return t.usedTokens();") == {
        "tokens": 138,
        "exact": False,
    }
    # Nothing answered yet: the prompt and the system prompt, both estimated.
    fresh = [{**msg("u1", "user", None), "content": "y" * 7}]
    assert run(modules, build(fresh) + 'return t.usedTokens("z".repeat(70));') == {
        "tokens": (2 + 8) + (20 + 8),
        "exact": False,
    }
    assert run(modules, 'return tree.estimateTokens("");') == 0


def test_a_done_frame_finishes_its_message(modules: Page) -> None:
    body = """
        const m = {id: "a", role: "assistant", state: "running", model: "m1"};
        tree.applyDone(m, {finish_reason: "aborted", content: "Hi", usage: {total_tokens: 3}});
        const failed = {id: "b", state: "running"};
        tree.applyDone(failed, {finish_reason: "error", error: "It broke."});
        return [m, failed];
    """
    finished, failed = run(modules, body)
    assert finished["state"] == "aborted"
    assert finished["content"] == "Hi"
    assert finished["model"] == "m1"  # kept when the frame names none
    assert finished["tool_calls"] == []
    assert failed["state"] == "failed"
    assert failed["error"] == "It broke."
    assert failed["content"] == ""


@pytest.mark.parametrize(
    ("frame", "said"),
    [
        ({"position": 3, "eta_s": None}, "position 3"),
        ({"position": 2, "eta_s": 40}, "position 2, about 40 s"),
        ({"position": 9, "eta_s": 400}, "position 9, about 7 min"),
    ],
)
def test_a_waiting_answer_says_its_place_and_wait(
    modules: Page, frame: dict[str, Any], said: str
) -> None:
    assert run(modules, "return tree.queuePlace(args[0]);", frame) == said
