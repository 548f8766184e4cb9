"""Generation options: the one parser, and the one list of the keys it takes."""

from __future__ import annotations

import json

import pytest

from chat.openai_api import OPTION_KEYS as OPENAI_KEYS
from chat.options import (
    OPTION_KEYS,
    InvalidOptions,
    options_parse,
    options_stored,
    options_stored_read,
)

# A good value for every option, each parsed on its own.
GOOD = {
    "model": "SmolLM2",
    "system_prompt": "Be brief.",
    "temperature": 0.5,
    "top_p": 0.9,
    "min_p": 0.05,
    "top_k": 40,
    "repeat_penalty": 1.1,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "seed": 7,
    "max_tokens": 64,
    "stop": ["\n\n"],
    "response_format": {"type": "json_object"},
    "grammar": 'root ::= "yes" | "no"',
    "response_prefix": "Sure",
    "reasoning": False,
    "reasoning_budget": 100,
    "reasoning_effort": "low",
    "priority": "low",
    "tools": [{"type": "function", "function": {"name": "now", "parameters": {}}}],
    "tool_choice": "auto",
}


def test_every_listed_option_is_one_the_parser_takes() -> None:
    assert set(GOOD) == OPTION_KEYS
    for key, value in GOOD.items():
        raw = {key: value}
        if key == "tool_choice":
            raw["tools"] = GOOD["tools"]
        options_parse(raw)  # a key the parser skipped would fail loudly


def test_it_refuses_an_option_not_in_the_list_with_its_name() -> None:
    with pytest.raises(InvalidOptions) as refused:
        options_parse({"temprature": 0.5})
    assert refused.value.key == "temprature"
    assert str(refused.value) == "Option 'temprature': is not a known option."


def test_the_openai_adapter_takes_the_parsers_options_but_model_and_system_prompt() -> None:
    assert OPTION_KEYS - {"model", "system_prompt"} == OPENAI_KEYS


def test_parsed_options_come_back_from_the_database_as_they_were_parsed() -> None:
    given = {
        "temperature": 0.2,
        "seed": 3,
        "stop": ["END", "\n\n"],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
        },
        "priority": "low",
        "system_prompt": "Answer in JSON.",
    }
    with_tools = {
        "tools": GOOD["tools"],
        "tool_choice": {"type": "function", "function": {"name": "now"}},
        "reasoning": False,
    }
    for raw in (given, with_tools, {}):
        parsed = options_parse(raw)
        stored = json.loads(json.dumps(options_stored(parsed)))  # what a JSONField keeps
        assert options_stored_read(stored, given=parsed.given) == parsed


def test_a_message_queued_before_parsed_options_were_kept_is_parsed_from_what_it_was_given() -> (
    None
):
    given = {"model": "SmolLM2", "temperature": 0.3, "priority": "high"}
    # Checked when it was sent (by staff, who may ask for high), so read with high allowed.
    assert options_stored_read({}, given=given) == options_parse(given, max_priority="high")
