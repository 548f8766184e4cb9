"""The engine on a thinking model (the default GGUF with a Qwen3-style template): thoughts
streamed apart from the answer, the budget that closes them, the switch, and refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest
from django.conf import settings
from llama_cpp._internals import LlamaModel

from inference.engine import BatchedEngine
from inference.reasoning import UNCLOSED_NOTE, ThinkingBudget
from inference.requests import Finished, GenerationRequest, ReasoningRefused, TextDelta
from inference.sampling import Sampling
from tests.thinking_model import QWEN3_STYLE_TEMPLATE, thinking_model_cached
from wizweb.default_model import default_model_path

pytestmark = pytest.mark.stack

QUESTION = [{"role": "user", "content": "What is 2+2?"}]


def load(path: Path) -> LlamaModel:
    return LlamaModel(
        path_model=str(path), params=llama_cpp.llama_model_default_params(), verbose=False
    )


@pytest.fixture(scope="module")
def thinker() -> Iterator[BatchedEngine]:
    source = default_model_path(Path(settings.MODELS_DIR))
    path, _ = thinking_model_cached(source)
    model = load(path)
    template = model.metadata()["tokenizer.chat_template"]
    engine = BatchedEngine(model, n_ctx=1024, parallel=2, chat_template=template)
    yield engine
    engine.close()


def run(engine: BatchedEngine, **sampling: object) -> tuple[list[TextDelta], Finished]:
    request = GenerationRequest(
        messages=QUESTION, sampling=Sampling(seed=7, temperature=0.0, **sampling)
    )
    events = list(engine.submit(request).events())
    finished = events[-1]
    assert isinstance(finished, Finished)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    return deltas, finished


def channel(deltas: list[TextDelta], name: str) -> str:
    return "".join(d.text for d in deltas if d.channel == name)


def test_it_reads_the_thinking_template_from_the_gguf(thinker: BatchedEngine) -> None:
    assert thinker.thinking.thinks
    assert thinker.thinking.switch == "enable_thinking"


def test_the_budget_closes_the_thinking_and_the_answer_follows_apart(
    thinker: BatchedEngine,
) -> None:
    # Without the budget this model never closes its block (see the unclosed test below).
    deltas, finished = run(thinker, response_prefix="<think>\n", reasoning_budget=6, max_tokens=40)
    assert finished.note == ""
    assert finished.reasoning
    assert finished.reasoning_tokens >= 6
    assert finished.reasoning_tokens <= finished.completion_tokens
    assert channel(deltas, "reasoning") == finished.reasoning
    assert channel(deltas, "content") == finished.content
    for delta in deltas:
        assert "<think>" not in delta.text and "</think>" not in delta.text
    channels = [d.channel for d in deltas]
    assert channels == sorted(channels, key=lambda c: c == "content")  # thoughts first
    assert finished.reasoning_ms >= 0


def test_an_unclosed_block_is_kept_as_the_answer_with_a_note(thinker: BatchedEngine) -> None:
    deltas, finished = run(thinker, response_prefix="<think>\n", max_tokens=12)
    assert channel(deltas, "reasoning").strip() == finished.content
    assert finished.content
    assert finished.reasoning == ""
    assert finished.reasoning_tokens == 0
    assert finished.note == UNCLOSED_NOTE


def test_switching_thinking_off_uses_the_templates_own_switch(thinker: BatchedEngine) -> None:
    off = GenerationRequest(messages=QUESTION, sampling=Sampling(reasoning=False))
    on = GenerationRequest(messages=QUESTION, sampling=Sampling(reasoning=True))
    prompt_off = thinker.model.detokenize(thinker.prompt_tokens(off), special=True).decode()
    prompt_on = thinker.model.detokenize(thinker.prompt_tokens(on), special=True).decode()
    assert prompt_off.endswith("<think>\n\n</think>\n\n")
    assert "<think>" not in prompt_on
    deltas, finished = run(thinker, reasoning=False, max_tokens=12)
    assert finished.content
    assert (finished.reasoning, finished.reasoning_tokens) == ("", 0)
    assert {d.channel for d in deltas} == {"content"}


def test_it_refuses_a_budget_beside_a_grammar(thinker: BatchedEngine) -> None:
    with pytest.raises(ReasoningRefused, match="cannot be combined with a grammar"):
        run(thinker, reasoning_budget=4, grammar='root ::= "yes"')


def test_a_model_that_does_not_think_refuses_thinking_but_not_thinking_off() -> None:
    model = load(default_model_path(Path(settings.MODELS_DIR)))
    template = model.metadata().get("tokenizer.chat_template", "")
    engine = BatchedEngine(model, n_ctx=512, parallel=1, chat_template=template)
    try:
        assert not engine.thinking.thinks
        for sampling in ({"reasoning": True}, {"reasoning_budget": 8}):
            with pytest.raises(ReasoningRefused, match="does not think"):
                run(engine, max_tokens=4, **sampling)
        _, plain = run(engine, max_tokens=4)
        _, off = run(engine, max_tokens=4, reasoning=False)  # nothing to switch off
        assert off.content == plain.content
        assert off.reasoning == "" and off.note == ""
    finally:
        engine.close()


def test_earlier_thinking_is_not_fed_back_unless_the_template_reads_it(
    thinker: BatchedEngine,
) -> None:
    history = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Two and two, a secret."},
        {"role": "user", "content": "And 3+3?"},
    ]
    assert not thinker.thinking.keeps_reasoning
    request = GenerationRequest(messages=history)
    prompt = thinker.model.detokenize(thinker.prompt_tokens(request), special=True).decode()
    assert "a secret" not in prompt
    assert "4" in prompt


# A template that feeds earlier thinking back (as some do for tool-call chains): the history's
# `reasoning_content` then reaches the model.
KEEPS_REASONING = QWEN3_STYLE_TEMPLATE.replace(
    "{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}",
    "{{- '<|im_start|>assistant\\n<think>' + (message.reasoning_content or '') + '</think>'"
    " + content + '<|im_end|>\\n' }}",
)


def test_earlier_thinking_is_fed_back_when_the_template_reads_it() -> None:
    assert KEEPS_REASONING != QWEN3_STYLE_TEMPLATE
    model = load(default_model_path(Path(settings.MODELS_DIR)))
    engine = BatchedEngine(model, n_ctx=512, parallel=1, chat_template=KEEPS_REASONING)
    try:
        assert engine.thinking.keeps_reasoning
        history = [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4", "reasoning_content": "Two and two, kept."},
            {"role": "user", "content": "And 3+3?"},
        ]
        request = GenerationRequest(messages=history)
        prompt = engine.model.detokenize(engine.prompt_tokens(request), special=True).decode()
        assert "<think>Two and two, kept.</think>4" in prompt
    finally:
        engine.close()


PIECES = {1: b"<think>", 2: b" hm", 3: b"</think>", 4: b"Yes", 5: b" "}


def budget(amount: int, *, thinking: bool = False) -> ThinkingBudget:
    return ThinkingBudget(
        budget=amount,
        open_text=b"<think>",
        close_text=b"</think>",
        close_tokens=[9, 9],
        piece=PIECES.__getitem__,
        thinking=thinking,
    )


def test_the_budget_closes_the_block_after_its_tokens_in_the_decode_loop() -> None:
    watch = budget(3, thinking=True)
    assert [watch.after(2) for _ in range(3)] == [None, None, [9, 9]]
    assert watch.after(2) is None  # once


def test_the_budget_counts_from_a_block_the_model_opens_itself() -> None:
    watch = budget(2)
    assert watch.after(5) is None  # whitespace before the marker
    assert watch.after(1) is None
    assert watch.after(2) == [9, 9]


def test_the_budget_leaves_alone_a_block_the_model_closed_or_never_opened() -> None:
    closed = budget(3, thinking=True)
    assert [closed.after(t) for t in (2, 3, 2, 2, 2)] == [None] * 5
    plain = budget(1)
    assert [plain.after(t) for t in (4, 2, 2)] == [None] * 3
