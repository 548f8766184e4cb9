"""Grammars and JSON schemas from users are checked as llama.cpp would, within our limits.

llama.cpp itself is the judge: every grammar here is also given to `llama_sampler_init_grammar`
with the default model's vocabulary, and our verdict must match its own (a grammar we let
through that llama.cpp refuses would crash the worker)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest
from django.conf import settings
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from chat.grammar import (
    MAX_SCHEMA_REPETITION,
    GrammarError,
    _converter,
    grammar_check,
    schema_to_grammar,
)
from chat.options import InvalidOptions, options_parse
from inference.engine import GrammarRefused, grammar_sampler_check
from wizweb.default_model import default_model_path

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def vocab() -> Iterator[object]:
    path = default_model_path(Path(settings.MODELS_DIR))
    llama = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    yield llama._model.vocab
    llama.close()


def llama_accepts(vocab: object, grammar: str) -> bool:
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def we_accept(grammar: str) -> bool:
    try:
        grammar_check(grammar)
    except GrammarError:
        return False
    return True


SHIPPED = sorted(name for name in dir(_converter()) if name.endswith("_GBNF"))


@pytest.mark.parametrize("name", SHIPPED)
def test_it_accepts_every_grammar_llama_cpp_ships(vocab: object, name: str) -> None:
    grammar = getattr(_converter(), name)
    assert we_accept(grammar)
    assert llama_accepts(vocab, grammar)


REFUSED = {
    "root ::= ( ": "expected ')'",
    "root ::= x": "uses the rule 'x' but never defines it",
    'answer ::= "yes"': "has no root rule",
    'root ::= root "a"': "left-recursive in rule 'root'",
    'root ::= ("a" | )*': "left-recursive in rule 'root'",
    'root ::= a\na ::= b "x"\nb ::= a': "left-recursive",
    'root ::= "a"{2001}': "llama.cpp allows at most 2000",
    'root ::= ("a" "b"){1000}{3}': "repeats rules more than llama.cpp allows",
    'root ::= "\\q"': "unknown escape",
    'root ::= "\\x4"': "needs 2 hex digits",
    "root ::= [a-": "unexpected end",
    'root ::= "a" ::= "b"': "expected the end of the line",
    "root ::= *": "needs something before it",
    'root ::= "a"{1,x}': "expected '}'",
    'root ::= "a"{x}': "expected a number",
    "# only a comment\n": "is empty",
    "root ::= <[99999999999]>": "token id too big",
}


@pytest.mark.parametrize(("grammar", "says"), REFUSED.items())
def test_it_refuses_what_llama_cpp_refuses_with_a_sentence(
    vocab: object, grammar: str, says: str
) -> None:
    with pytest.raises(GrammarError, match=re.escape(says)) as refused:
        grammar_check(grammar)
    assert str(refused.value).endswith(".")
    assert not llama_accepts(vocab, grammar)


def test_an_empty_grammar_means_none() -> None:
    # llama.cpp reads "" as no grammar at all (and whitespace as a grammar with no rules).
    assert options_parse({"grammar": ""}).sampling.grammar is None
    assert options_parse({"grammar": " \n"}).sampling.grammar is None
    with pytest.raises(GrammarError, match="is empty"):
        grammar_check(" \n")


def test_it_refuses_what_would_overflow_or_stall_llama_cpp() -> None:
    # Each of these crashes (stack overflow) or stalls a worker for minutes inside llama.cpp.
    deep = "root ::= " + "(" * 5000 + '"a"' + ")" * 5000
    with pytest.raises(GrammarError, match="nests groups more than"):
        grammar_check(deep, limit=100_000)
    chain = "\n".join(f'r{i} ::= r{i + 1} | r{i + 1} "x"' for i in range(60))
    doubling = f'root ::= r0\n{chain}\nr60 ::= "y"'
    with pytest.raises(GrammarError, match="too many alternative paths"):
        grammar_check(doubling)
    many = "root ::= " + " ".join(['"a"{0,2000}'] * 20)
    with pytest.raises(GrammarError, match="more than 20000 rules"):
        grammar_check(many)
    with pytest.raises(GrammarError, match="longer than 20000 characters"):
        grammar_check('root ::= "' + "a" * 20_000 + '"')
    with pytest.raises(GrammarError, match="NUL"):
        grammar_check('root ::= "a"\x00')


PIECES = [
    "root",
    "root ::= ",
    " ::= ",
    "::=",
    "a",
    "b-c",
    " ",
    "\n",
    "# note\n",
    '"x"',
    '""',
    '"\\n"',
    '"\\x41"',
    '"\\q"',
    "[a-z]",
    "[^\\]]",
    "[",
    "]",
    ".",
    "(",
    ")",
    "|",
    "*",
    "+",
    "?",
    "{2}",
    "{1,3}",
    "{0,}",
    "{",
    "}",
    ",",
    "<[42]>",
    "\na ::= ",
    "\nb-c ::= ",
]


@hypothesis_settings(derandomize=True, max_examples=400, deadline=None, database=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=14))
def test_it_agrees_with_llama_cpp_on_generated_grammars(vocab: object, pieces: list[str]) -> None:
    grammar = "".join(pieces)
    assert we_accept(grammar) == llama_accepts(vocab, grammar), grammar


def test_it_refuses_a_grammar_the_model_cannot_use_without_crashing(vocab: object) -> None:
    # Syntax we cannot judge without the model: a token literal. The engine asks llama.cpp.
    grammar = "root ::= <surely-not-one-token>"
    assert we_accept(grammar)
    with pytest.raises(GrammarRefused, match=r"refused by llama\.cpp for this model"):
        grammar_sampler_check(vocab, grammar)
    grammar_sampler_check(vocab, 'root ::= "yes" | "no"')


BOMBS = [
    {"type": "string", "maxLength": 100_000_000},
    {"type": "object", "properties": {"a": {"type": "string", "minLength": 5000}}},
    {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 10**9},
    {"type": "object", "minProperties": 10**6},
    {"type": "string", "pattern": "^a{0,100000000}$"},
    {"type": "string", "pattern": "^(ab){1,99999999999999}$"},
]


@pytest.mark.parametrize("schema", BOMBS)
def test_it_refuses_a_small_schema_that_asks_for_a_huge_grammar(schema: dict) -> None:
    with pytest.raises(GrammarError, match=str(MAX_SCHEMA_REPETITION)):
        schema_to_grammar(schema)


def test_it_refuses_a_deeply_nested_schema() -> None:
    schema: dict = {"type": "string"}
    for _ in range(40):
        schema = {"type": "array", "items": schema}
    with pytest.raises(GrammarError, match="nests more than 32 levels"):
        schema_to_grammar(schema)


def test_it_converts_a_schema_at_the_limits_into_a_grammar_llama_cpp_takes(
    vocab: object,
) -> None:
    schema = {
        "type": "object",
        "properties": {
            f"field{i}": {"type": "string", "maxLength": MAX_SCHEMA_REPETITION} for i in range(5)
        }
        | {"tags": {"type": "array", "items": {"type": "string"}, "maxItems": 50}},
        "required": ["field0"],
    }
    grammar = schema_to_grammar(schema)
    assert llama_accepts(vocab, grammar)


def test_options_name_the_bad_grammar_and_the_bad_schema() -> None:
    with pytest.raises(InvalidOptions, match="not valid GBNF") as bad_grammar:
        options_parse({"grammar": "root ::= ( "})
    assert bad_grammar.value.key == "grammar"
    bomb = {"type": "json_schema", "json_schema": {"schema": BOMBS[0]}}
    with pytest.raises(InvalidOptions, match="the JSON schema asks for maxLength") as bad_schema:
        options_parse({"response_format": bomb})
    assert bad_schema.value.key == "response_format"
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": BOMBS[0]}}},
    }
    with pytest.raises(InvalidOptions, match="maxLength") as bad_tool:
        options_parse({"tools": [tool]})
    assert bad_tool.value.key == "tools"


@pytest.mark.parametrize("opened", [False, True])
def test_the_call_grammar_of_a_thinking_model_is_one_llama_cpp_reads(
    vocab: object, opened: bool
) -> None:
    from chat.tools import call_request, tools_parse
    from inference.reasoning import template_reasoning
    from inference.sampling import Sampling
    from tests.chat.test_generation import WEATHER
    from tests.thinking_model import QWEN3_STYLE_TEMPLATE

    plan = tools_parse([WEATHER], "required")
    assert plan is not None
    prefix = "<think>\nHm" if opened else ""
    thinking = template_reasoning(QWEN3_STYLE_TEMPLATE)
    request = call_request([], plan, Sampling(response_prefix=prefix), thinking)
    grammar = request.sampling.grammar
    assert grammar is not None
    assert grammar.startswith(
        'root ::= thought-text "</think>"' if opened else 'root ::= ("<think>"'
    )
    assert request.sampling.response_prefix == prefix
    assert we_accept(grammar)
    assert llama_accepts(vocab, grammar)
