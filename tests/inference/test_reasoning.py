"""Thinking split from the answer, fed text by hand: no model needed."""

from __future__ import annotations

import pytest

from inference.reasoning import (
    HARMONY,
    UNCLOSED_NOTE,
    Piece,
    ReasoningMarkers,
    ReasoningSplitter,
    template_reasoning,
)


def streamed(splitter: ReasoningSplitter, parts: list[str]) -> list[Piece]:
    out: list[Piece] = []
    for part in parts:
        out += splitter.feed(part)
    out += splitter.finish()
    return out


def joined(pieces: list[Piece], channel: str) -> str:
    return "".join(p.text for p in pieces if p.channel == channel)


def test_it_splits_a_thinking_block_from_the_answer() -> None:
    splitter = ReasoningSplitter()
    pieces = streamed(splitter, ["<think>\nLet me see.", "\n</think>\n\nIt is ", "4."])
    assert joined(pieces, "reasoning") == "Let me see."
    assert joined(pieces, "content") == "It is 4."
    assert splitter.reasoning == "Let me see."
    assert splitter.content == "It is 4."
    assert splitter.closed
    assert splitter.note == ""


def test_it_gives_reasoning_before_content_in_order() -> None:
    pieces = streamed(ReasoningSplitter(), ["<think>a", "b</think>", "c"])
    assert [p.channel for p in pieces] == ["reasoning", "reasoning", "content"]


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_it_never_gives_out_part_of_a_marker_whatever_the_split(size: int) -> None:
    text = "<think>I think.</think>The answer."
    splitter = ReasoningSplitter()
    pieces = streamed(splitter, [text[i : i + size] for i in range(0, len(text), size)])
    for piece in pieces:
        assert "<" not in piece.text and ">" not in piece.text, piece
    assert joined(pieces, "reasoning") == "I think."
    assert joined(pieces, "content") == "The answer."


def test_it_holds_back_what_could_be_the_closing_marker_until_it_is_not() -> None:
    splitter = ReasoningSplitter()
    assert splitter.feed("<think>x </th") == [Piece("reasoning", "x")]
    assert splitter.thinking
    assert splitter.feed("ere") == [Piece("reasoning", " </there")]
    assert splitter.feed("</think>ok") == [Piece("content", "ok")]


def test_an_answer_without_thinking_is_all_content_and_keeps_its_whitespace() -> None:
    splitter = ReasoningSplitter()
    pieces = streamed(splitter, ["  Hello", " <think> there"])
    assert {p.channel for p in pieces} == {"content"}
    assert joined(pieces, "content") == "  Hello <think> there"
    assert splitter.reasoning == ""
    assert not splitter.closed


def test_a_marker_in_the_middle_of_the_answer_is_text() -> None:
    splitter = ReasoningSplitter()
    streamed(splitter, ["Use <think>", " tags</think> like this."])
    assert splitter.content == "Use <think> tags</think> like this."
    assert splitter.reasoning == ""


def test_a_short_answer_that_looks_like_the_start_of_a_marker_is_kept() -> None:
    splitter = ReasoningSplitter()
    assert splitter.feed("<th") == []
    assert splitter.finish() == [Piece("content", "<th")]
    assert splitter.content == "<th"


def test_an_unclosed_block_ends_as_content_with_a_note() -> None:
    splitter = ReasoningSplitter()
    pieces = streamed(splitter, ["<think>\nStill going", " and going </thi"])
    assert joined(pieces, "reasoning") == "Still going and going"
    assert splitter.reasoning == ""
    assert splitter.content == "Still going and going </thi"
    assert splitter.note == UNCLOSED_NOTE


def test_an_empty_unclosed_block_has_no_note() -> None:
    splitter = ReasoningSplitter()
    streamed(splitter, ["<think>\n"])
    assert (splitter.reasoning, splitter.content, splitter.note) == ("", "", "")


def test_a_block_opened_by_the_prompt_needs_no_opening_marker() -> None:
    splitter = ReasoningSplitter(thinking=True)
    assert splitter.thinking
    streamed(splitter, ["Hmm.</think>", "\n\nYes."])
    assert (splitter.reasoning, splitter.content) == ("Hmm.", "Yes.")


def test_it_splits_by_other_markers() -> None:
    markers = ReasoningMarkers("<|begin_of_thought|>", "<|end_of_thought|>")
    splitter = ReasoningSplitter(markers)
    streamed(splitter, ["<|begin_of_", "thought|>plan<|end_of_thought|>", "done"])
    assert (splitter.reasoning, splitter.content) == ("plan", "done")


def test_it_splits_harmony_analysis_from_the_final_channel() -> None:
    splitter = ReasoningSplitter(HARMONY)
    pieces = streamed(
        splitter,
        [
            "<|channel|>analy",
            "sis<|message|>User wants 2+2.",
            " Easy.<|start|>assis",
            "tant<|channel|>final<|message|>It is ",
            "4.",
        ],
    )
    assert (splitter.reasoning, splitter.content) == ("User wants 2+2. Easy.", "It is 4.")
    assert joined(pieces, "reasoning") == splitter.reasoning
    assert joined(pieces, "content") == splitter.content
    assert not any("<|" in p.text for p in pieces)


def test_a_harmony_answer_that_does_not_think_loses_its_channel_marker() -> None:
    splitter = ReasoningSplitter(HARMONY)
    pieces = streamed(splitter, ["<|channel|>fi", "nal<|message|>Hello", " there."])
    assert (splitter.reasoning, splitter.content) == ("", "Hello there.")
    assert joined(pieces, "content") == "Hello there."


def test_an_unclosed_harmony_analysis_is_kept_as_the_answer_with_a_note() -> None:
    splitter = ReasoningSplitter(HARMONY)
    streamed(splitter, ["<|channel|>analysis<|message|>Thinking and", " thinking<|start|>assi"])
    assert splitter.reasoning == ""
    assert splitter.content == "Thinking and thinking<|start|>assi"
    assert splitter.note == UNCLOSED_NOTE


# The parts of gpt-oss's template (llama.cpp's models/templates/openai-gpt-oss-120b.jinja) that
# say how it thinks and calls tools.
GPT_OSS_LIKE = (
    '{%- if reasoning_effort is not defined %}{%- set reasoning_effort = "medium" %}{%- endif %}'
    '{{- "Reasoning: " + reasoning_effort + "\n\n" }}'
    '{%- if tools -%}{{- render_tool_namespace("functions", tools) }}{%- endif -%}'
    "{%- for message in loop_messages -%}{%- if message.role == 'assistant' -%}"
    '{%- if "tool_calls" in message %}{%- set tool_call = message.tool_calls[0] %}'
    '{{- "<|start|>assistant<|channel|>analysis<|message|>" + message.thinking + "<|end|>" }}'
    "{%- else %}"
    '{{- "<|start|>assistant<|channel|>final<|message|>" + message.content + "<|end|>" }}'
    "{%- endif %}{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}\n<|start|>assistant\n{%- endif -%}"
)


def test_it_reads_a_gpt_oss_template_as_harmony_thinking_with_tools() -> None:
    found = template_reasoning(GPT_OSS_LIKE)
    assert found.thinks and found.markers == HARMONY
    assert found.switch == ""  # reasoning_effort sets how long, not whether: off is the fallback
    assert not found.opens_block
    assert found.tools
    assert not found.keeps_reasoning  # it reads `thinking` only for a tool call's own turn
    # Closed by the worker (a budget, thinking off) with the `<|end|>` the model would write.
    assert HARMONY.closing == "<|end|><|start|>assistant<|channel|>final<|message|>"


QWEN3_LIKE = (
    "{%- if tools %}{{- tools | tojson }}<tool_call>{%- endif %}"
    "{%- for message in messages %}{%- if message.reasoning_content %}{%- endif %}"
    "{{ message.content }}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "<think>\n\n</think>\n\n{%- endif %}{%- endif %}"
)
R1_LIKE = (
    "{% for message in messages %}{{ message['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<\uff5cAssistant\uff5c><think>\n{% endif %}"
    "{% set content = content.split('</think>')[-1] %}"
)
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
)


def test_it_reads_a_qwen3_template_as_thinking_switchable_with_tools() -> None:
    found = template_reasoning(QWEN3_LIKE)
    assert found.thinks and found.markers is not None
    assert found.markers.open == "<think>"
    assert found.switch == "enable_thinking"
    assert found.tools
    assert not found.opens_block


def test_it_reads_an_r1_template_as_thinking_always_from_the_prompt() -> None:
    found = template_reasoning(R1_LIKE)
    assert found.thinks
    assert found.switch == ""
    assert found.opens_block
    assert not found.tools


# The parts of SmolLM3's template that say how it thinks: `enable_thinking` chooses between
# "/think" and "/no_think", which a system prompt may also say.
SMOLLM3_LIKE = (
    "{%- if enable_thinking is not defined -%}{%- set enable_thinking = true -%}{%- endif -%}"
    '{%- if enable_thinking -%}{%- set reasoning_mode = "/think" -%}'
    '{%- else -%}{%- set reasoning_mode = "/no_think" -%}{%- endif -%}'
    '{%- if "/no_think" in system_message -%}{%- set reasoning_mode = "/no_think" -%}{%- endif -%}'
    "{%- for message in messages -%}{{ message.content }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}"
    '{%- if reasoning_mode == "/no_think" -%}{{ "<think>\n\n</think>\n" }}{%- endif -%}'
    "{%- endif -%}"
)


def test_it_reads_a_smollm3_template_as_thinking_switched_by_enable_thinking() -> None:
    found = template_reasoning(SMOLLM3_LIKE)
    assert found.thinks and found.markers is not None and found.markers.open == "<think>"
    assert found.switch == "enable_thinking"
    assert not found.opens_block


def test_it_reads_a_plain_template_as_not_thinking() -> None:
    found = template_reasoning(CHATML)
    assert not found.thinks and found.markers is None
    assert found.switch == "" and not found.opens_block and not found.tools
