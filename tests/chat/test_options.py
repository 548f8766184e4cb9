"""Generation options: the one parser, and the one list of the keys it takes."""

from __future__ import annotations

import pytest

from chat.openai_api import OPTION_KEYS as OPENAI_KEYS
from chat.options import OPTION_KEYS, InvalidOptions, options_parse

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
