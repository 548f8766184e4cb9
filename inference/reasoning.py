"""Thinking apart from the answer, with no model behind it: shown text in, two channels out.

Models that think (Qwen3, DeepSeek-R1 distills, SmolLM3) write their reasoning between their
template's markers, `<think>` and `</think>`, and then the answer; gpt-oss writes OpenAI's
"harmony" channels, `<|channel|>analysis<|message|>` thoughts, then
`<|start|>assistant<|channel|>final<|message|>` and the answer. `ReasoningSplitter` takes the
text `TextAssembler` releases and says which part is reasoning and which is content, never
giving out part of a marker. Only a block at the start of the answer counts: a `<think>` in the
middle of an answer is the answer's own text (code about thinking models, say).

A block that opens and never closes (the answer ran out of tokens, or the model forgot) is not
lost: its text becomes the content and `note` says why, so the reader still gets every word.
What the templates say about thinking (markers, how it is switched, tools) is read here too,
from the template's text, so the worker and the model-admin page agree. And `ThinkingBudget`
closes a thinking block after so many tokens, heard token by token inside the scheduler's
decode loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from inference.text import partial_stop_len

Channel = Literal["reasoning", "content"]

UNCLOSED_NOTE = "The model began thinking and never finished; what it wrote is kept as the answer."


@dataclass(frozen=True)
class ReasoningMarkers:
    open: str
    close: str
    # What opens the answer when the model does not think first (harmony's final channel); it
    # is dropped like the markers, so it never shows in the content.
    answer: str = ""
    # What the worker writes to close the block itself (a budget spent, thinking switched off).
    forced_close: str = ""

    @property
    def closing(self) -> str:
        return self.forced_close or f"\n{self.close}\n\n"


THINK = ReasoningMarkers("<think>", "</think>")
# gpt-oss. llama.cpp always renders `<|channel|>`, `<|message|>` and `<|start|>` (they are not
# control tokens there), but not `<|end|>`, which ends the analysis: so the close is what
# follows it, and `<|end|>` is written only when the worker closes the block.
HARMONY = ReasoningMarkers(
    "<|channel|>analysis<|message|>",
    "<|start|>assistant<|channel|>final<|message|>",
    answer="<|channel|>final<|message|>",
    forced_close="<|end|><|start|>assistant<|channel|>final<|message|>",
)

# Markers other families use, first match wins when a template is read.
KNOWN_MARKERS: tuple[ReasoningMarkers, ...] = (
    THINK,
    ReasoningMarkers("<|begin_of_thought|>", "<|end_of_thought|>"),
    ReasoningMarkers("<thinking>", "</thinking>"),
    HARMONY,
)


@dataclass(frozen=True)
class Piece:
    channel: Channel
    text: str


class ReasoningSplitter:
    """The answer's text split into reasoning and content as it streams.

    `thinking=True` when the prompt already opened the block (a template that ends its
    generation prompt with `<think>`, or a response prefix that does): the first text is then
    reasoning without a marker."""

    def __init__(self, markers: ReasoningMarkers = THINK, *, thinking: bool = False) -> None:
        self.markers = markers
        self.reasoning = ""
        self.content = ""
        self.note = ""
        self.closed = False  # a block was opened and closed
        self._state: Literal["start", "reasoning", "content"] = "reasoning" if thinking else "start"
        self._opened = thinking
        self._buffer = ""  # text not given out yet: part of a marker, or whitespace at an edge

    @property
    def thinking(self) -> bool:
        """The model is inside its thinking block now."""
        return self._state == "reasoning"

    def feed(self, text: str) -> list[Piece]:
        """Add released text; the pieces that may be shown now, in order."""
        self._buffer += text
        out: list[Piece] = []
        while True:
            if self._state == "start":
                stripped = self._buffer.lstrip()
                if stripped.startswith(self.markers.open):
                    self._buffer = stripped[len(self.markers.open) :]
                    self._state, self._opened = "reasoning", True
                    continue
                answer = self.markers.answer
                if answer and stripped.startswith(answer):
                    self._buffer = stripped[len(answer) :]
                    self._state = "content"
                    continue
                if self.markers.open.startswith(stripped) or answer.startswith(stripped):
                    break  # only whitespace or part of a marker so far
                self._state = "content"
                continue
            if self._state == "reasoning":
                end = self._buffer.find(self.markers.close)
                if end != -1:
                    self._emit("reasoning", self._buffer[:end].rstrip(), out)
                    self._buffer = self._buffer[end + len(self.markers.close) :]
                    self._state, self.closed = "content", True
                    continue
                # Hold back what could start the closing marker, and trailing whitespace,
                # which is dropped if the marker follows it.
                held = partial_stop_len(self._buffer, (self.markers.close,))
                ready = self._buffer[: len(self._buffer) - held]
                held += len(ready) - len(ready.rstrip())
                self._emit("reasoning", self._buffer[: len(self._buffer) - held], out)
                self._buffer = self._buffer[len(self._buffer) - held :]
                break
            if self.closed and not self.content:
                self._buffer = self._buffer.lstrip()  # the blank line after the block
            self._emit("content", self._buffer, out)
            self._buffer = ""
            break
        return out

    def finish(self) -> list[Piece]:
        """The end of the answer: held text released; an unclosed block becomes the content."""
        out: list[Piece] = []
        if self._state == "reasoning":
            # The reader saw this text as reasoning; `content` and `note` now say what it is.
            self.content = (self.reasoning + self._buffer).strip()
            self.note = UNCLOSED_NOTE if self.content else ""
            self.reasoning = ""
        elif self._state == "start":
            self._emit("content", self._buffer, out)  # whitespace or part of a marker
        self._buffer = ""
        self._state = "content"
        return out

    def _emit(self, channel: Channel, text: str, out: list[Piece]) -> None:
        if channel == "reasoning" and not self.reasoning:
            text = text.lstrip()
        if not text:
            return
        if channel == "reasoning":
            self.reasoning += text
        else:
            self.content += text
        if out and out[-1].channel == channel:
            out[-1] = Piece(channel, out[-1].text + text)
        else:
            out.append(Piece(channel, text))


@dataclass(frozen=True)
class TemplateReasoning:
    """What a chat template says about thinking and tools, read from its text."""

    thinks: bool
    markers: ReasoningMarkers | None
    switch: str  # "enable_thinking", "/think", or "" when it cannot be switched
    opens_block: bool  # its generation prompt already opens the block
    tools: bool  # it renders `tools` itself (native tool calling)
    keeps_reasoning: bool  # it feeds earlier turns' reasoning back (`reasoning_content`)


def template_reasoning(template: str) -> TemplateReasoning:
    markers = next((m for m in KNOWN_MARKERS if m.open in template and m.close in template), None)
    if "enable_thinking" in template:
        switch = "enable_thinking"
    elif "/no_think" in template:
        switch = "/think"
    else:
        switch = ""
    # What the template writes after `add_generation_prompt`, up to the end of that `if`.
    after = template.rsplit("add_generation_prompt", 1)[-1] if markers else ""
    generation_prompt = re.split(r"\{%-?\s*endif", after, maxsplit=1)[0]
    return TemplateReasoning(
        thinks=markers is not None,
        markers=markers,
        switch=switch if markers else "",
        opens_block=markers is not None
        and markers.open in generation_prompt
        and markers.close not in generation_prompt,
        tools="tools" in template and "tool_call" in template,
        keeps_reasoning="reasoning_content" in template,
    )


@dataclass
class ThinkingBudget:
    """Closes a thinking block once `budget` of its tokens are written, inside the decode loop:
    the reader of the tokens may lag many tokens behind on a busy box, and the budget must
    hold however far. Markers are matched on the tokens' bytes (`piece`), so a model that
    closes its block itself is never closed twice."""

    budget: int
    open_text: bytes
    close_text: bytes
    close_tokens: list[int]
    piece: Callable[[int], bytes]
    thinking: bool = False  # the prompt opened the block
    spent: int = 0
    done: bool = False
    _tail: bytes = b""

    def after(self, token: int) -> list[int] | None:
        """Hear a sampled token; the tokens to write in place of the next one, if any."""
        if self.done:
            return None
        self._tail += self.piece(token)
        if not self.thinking:
            start = self._tail.lstrip()
            if start.startswith(self.open_text):
                self.thinking, self._tail = True, start[len(self.open_text) :]
            elif not self.open_text.startswith(start):
                self.done = True  # the answer began without thinking
                return None
        if self.thinking:
            if self.close_text in self._tail:
                self.done = True
                return None
            self._tail = self._tail[-(len(self.close_text) + 16) :]
            self.spent += 1
        if self.thinking and self.spent >= self.budget:
            self.done = True
            return self.close_tokens
        return None
