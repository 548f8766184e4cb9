"""untrusted_json_parse: what JSON from outside may hold before the server touches it."""

from __future__ import annotations

import json

import pytest

from wizweb.untrusted_json import MAX_JSON_DEPTH, UntrustedJSONError, untrusted_json_parse


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_it_reads_ordinary_json_and_paired_surrogates() -> None:
    text = '{"a": [1, 2.5, "x", null, true], "emoji": "\\ud83d\\ude00", "": {}}'
    assert untrusted_json_parse(text) == json.loads(text)
    assert untrusted_json_parse(b'{"a": 1}') == {"a": 1}


def test_it_allows_the_documented_depth_and_no_more() -> None:
    assert untrusted_json_parse(nested(MAX_JSON_DEPTH)) is not None
    with pytest.raises(UntrustedJSONError, match=f"more than {MAX_JSON_DEPTH} levels deep"):
        untrusted_json_parse(nested(MAX_JSON_DEPTH + 1))
    with pytest.raises(UntrustedJSONError, match="levels deep"):
        untrusted_json_parse('{"a": ' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1))


def test_it_refuses_nesting_too_deep_for_the_parser_itself_with_a_value_error() -> None:
    # json.loads raises RecursionError here, which is not a ValueError.
    with pytest.raises(ValueError, match="levels deep"):
        untrusted_json_parse(nested(200_000))


@pytest.mark.parametrize(
    "text",
    ['"\\ud800"', '["ok", "tail \\udfff"]', '{"\\ud800": 1}', '{"a": {"b": ["\\udbff x"]}}'],
)
def test_it_refuses_a_lone_surrogate_in_any_string_or_key(text: str) -> None:
    with pytest.raises(UntrustedJSONError, match="lone UTF-16 surrogate"):
        untrusted_json_parse(text)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("NaN", "NaN is not a JSON number"),
        ('{"t": -Infinity}', "-Infinity is not a JSON number"),
        ("[1e999]", "too large"),
        ("{'a': 1}", "not valid JSON"),
        ("", "not valid JSON"),
        (b"\xff\xff\x00\x00", "not valid JSON"),
        ("1" * 5000, "at most 4300 digits"),
    ],
)
def test_it_says_why_other_documents_cannot_be_used(text: str | bytes, says: str) -> None:
    with pytest.raises(UntrustedJSONError, match=says) as caught:
        untrusted_json_parse(text)
    assert str(caught.value).endswith(".")
