"""Function calling that works with any model and any chat template.

OpenAI's `tools` and `tool_choice` are served in up to two constrained passes over the model,
instead of relying on a template or a model trained on one tool-call format:

1. `auto` only: a decision pass asks the model, greedily and with a yes/no grammar, whether
   the request needs one of the tools. "no" gives an ordinary streamed answer.
2. the call pass (after "yes", or at once for `required` or a named function): the tools are
   described in a system message and a grammar built from their JSON schemas makes the model
   write `[{"name": ..., "arguments": {...}}, ...]`, which always parses. It comes back as
   `tool_calls` in OpenAI's shape with `finish_reason` "tool_calls".

How well a model decides is the model's own business: a 135M model says "yes" too often.

A model that thinks may think before it calls (its template's markers, `inference.reasoning`):
the call grammar then lets it write its thinking block first, up to TOOL_THOUGHT_CHARS
characters, and requires it when the prompt (or a response prefix) opened the block. The
worker splits that block off like any other, so the calls are parsed from the content alone
and the thinking is kept apart as the answer's reasoning.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, replace
from typing import Any

from chat.grammar import GrammarError, schema_to_grammar
from inference.reasoning import TemplateReasoning
from inference.requests import GenerationRequest
from inference.sampling import Sampling

MAX_TOOLS = 32
YES_NO_GRAMMAR = 'root ::= "yes" | "no"'
# The longest thinking before tool calls: the grammar closes the block there, since a budget
# (forced tokens) cannot be used beside a grammar.
TOOL_THOUGHT_CHARS = 1000


class ToolsError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass(frozen=True)
class ToolRequest:
    tools: tuple[ToolSpec, ...]
    choice: str  # "auto", "required", or the name of the function that must be called

    @property
    def needs_decision(self) -> bool:
        return self.choice == "auto"

    def callable_tools(self) -> tuple[ToolSpec, ...]:
        if self.choice in ("auto", "required"):
            return self.tools
        return tuple(t for t in self.tools if t.name == self.choice)


def _tool_spec(raw: Any) -> ToolSpec:
    if not isinstance(raw, dict) or raw.get("type") != "function":
        raise ToolsError("tools", 'each tool must be {"type": "function", "function": {...}}.')
    function = raw.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ToolsError("tools", "each function needs a name.")
    name = function["name"]
    if not name or len(name) > 64 or not all(c.isalnum() or c in "_-" for c in name):
        raise ToolsError("tools", f"{name!r} is not a valid function name (letters, digits, _ -).")
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise ToolsError("tools", f"the parameters of {name} must be a JSON schema object.")
    description = function.get("description") or ""
    if not isinstance(description, str):
        raise ToolsError("tools", f"the description of {name} must be a string.")
    return ToolSpec(name=name, description=description, parameters=parameters)


def tools_parse(tools: Any, tool_choice: Any) -> ToolRequest | None:
    """Check OpenAI's `tools` and `tool_choice`; None when no tool may be called."""
    if tools is None:
        if tool_choice not in (None, "none"):
            raise ToolsError("tool_choice", "needs tools to choose from.")
        return None
    if not isinstance(tools, list) or not tools:
        raise ToolsError("tools", "must be a non-empty list.")
    if len(tools) > MAX_TOOLS:
        raise ToolsError("tools", f"at most {MAX_TOOLS} tools.")
    specs = tuple(_tool_spec(t) for t in tools)
    names = [t.name for t in specs]
    if len(set(names)) != len(names):
        raise ToolsError("tools", "function names must be unique.")
    for spec in specs:
        _call_grammar((spec,))  # a schema the grammar converter cannot use is refused now
    choice = "auto" if tool_choice is None else tool_choice
    if choice == "none":
        return None
    if choice in ("auto", "required"):
        return ToolRequest(specs, choice)
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        wanted = function.get("name") if isinstance(function, dict) else None
        if not isinstance(wanted, str) or wanted not in names:
            raise ToolsError("tool_choice", f"names a function that is not in tools: {wanted!r}.")
        return ToolRequest(specs, wanted)
    raise ToolsError(
        "tool_choice", 'must be "none", "auto", "required" or {"type": "function", ...}.'
    )


def _call_grammar(tools: tuple[ToolSpec, ...]) -> str:
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters},
            "required": ["name", "arguments"],
        }
        for t in tools
    ]
    schema = {"type": "array", "items": {"anyOf": calls}, "minItems": 1, "maxItems": 4}
    try:
        return schema_to_grammar(schema)
    except GrammarError as exc:
        raise ToolsError("tools", f"the parameters schemas: {exc}") from None


def _tool_list(tools: tuple[ToolSpec, ...]) -> str:
    return "\n".join(f"- {t.name}: {t.description or 'no description'}" for t in tools)


def decision_request(history: list[dict[str, str]], request: ToolRequest) -> GenerationRequest:
    """Does the newest user turn need a tool? Greedy, one word."""
    asked = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
    messages = [
        {"role": "system", "content": "You are a careful assistant. Most requests need no tool."},
        {
            "role": "user",
            "content": f"Available tools:\n{_tool_list(request.tools)}\n\n"
            f'User request: "{asked}"\n\nDoes this request ask for what a tool provides? '
            "Reply with yes or no.",
        },
    ]
    return GenerationRequest(
        messages=messages,
        sampling=Sampling(temperature=0.0, top_k=1, max_tokens=2, grammar=YES_NO_GRAMMAR, seed=0),
    )


def _literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _thought_first(grammar: str, thinking: TemplateReasoning, *, opened: bool) -> str:
    """The call grammar with the model's thinking block before the calls: required when the
    block is already open, optional otherwise. Its text may hold any `<` but the one that
    starts the closing marker (`</`), so the block ends only where the model closes it (or at
    TOOL_THOUGHT_CHARS)."""
    assert thinking.markers is not None and thinking.markers.close.startswith("</")
    calls, renamed = re.subn(r"^root ::=", "calls ::=", grammar, count=1, flags=re.M)
    assert renamed == 1, "the converted call grammar has no root rule"
    close = _literal(thinking.markers.close)
    block = f"thought-text {close} thought-gap"
    rules = [
        f"root ::= {block} calls"
        if opened
        else f"root ::= ({_literal(thinking.markers.open)} {block})? calls",
        f'thought-text ::= ([^<] | "<" [^/]){{0,{TOOL_THOUGHT_CHARS}}}',
        "thought-gap ::= [ \\t\\n]{0,4}",
    ]
    return "\n".join(rules) + "\n" + calls


def call_request(
    history: list[dict[str, str]],
    request: ToolRequest,
    sampling: Sampling,
    thinking: TemplateReasoning | None = None,
) -> GenerationRequest:
    """Write the tool calls, as JSON that the grammar guarantees; for a model that thinks
    (`thinking`, read from its template), after its thinking."""
    tools = request.callable_tools()
    described = json.dumps([t.as_json() for t in tools], ensure_ascii=False)
    instruction = (
        "You can call these functions. Answer with a JSON list of calls, each "
        '{"name": <function name>, "arguments": {<arguments by the parameters schema>}}.\n'
        f"Functions: {described}"
    )
    system = [m for m in history[:1] if m["role"] == "system"]
    if system:
        instruction = f"{system[0]['content']}\n\n{instruction}"
    messages = [{"role": "system", "content": instruction}, *history[len(system) :]]
    grammar = _call_grammar(tools)
    prefix = ""
    room = max(sampling.max_tokens, 256)
    markers = thinking.markers if thinking is not None else None
    # Harmony's close is made of special tokens (`<|end|>` is not even text), which a grammar
    # cannot ask for: gpt-oss calls tools without thinking first here.
    thinks_in_text = markers is not None and markers.close.startswith("</")
    if (
        thinking is not None
        and markers is not None
        and thinks_in_text
        and sampling.reasoning is not False
    ):
        # A response prefix is kept only when it opens the thinking (any other would break
        # the JSON); the block is then open, as it is after a template that opens it.
        given = sampling.response_prefix
        if given.lstrip().startswith(markers.open) and markers.close not in given:
            prefix = given
        opened = thinking.opens_block or bool(prefix)
        grammar = _thought_first(grammar, thinking, opened=opened)
        room += TOOL_THOUGHT_CHARS
    return GenerationRequest(
        messages=messages,
        sampling=replace(
            sampling, grammar=grammar, stop=(), response_prefix=prefix, max_tokens=room
        ),
    )


def tool_calls_from(content: str) -> list[dict[str, Any]]:
    """The calls of a call pass, in OpenAI's shape (arguments as a JSON string)."""
    return [
        {
            "id": f"call_{secrets.token_hex(12)}",
            "type": "function",
            "function": {
                "name": call["name"],
                "arguments": json.dumps(call["arguments"], ensure_ascii=False),
            },
        }
        for call in json.loads(content)
    ]
