"""Grammars from users, checked before they reach llama.cpp.

llama.cpp parses a GBNF grammar only when a generation builds its sampler, and a grammar it
refuses comes back as a null sampler that llama-cpp-python then uses: the worker dies with
SIGSEGV. Its parser and its left-recursion check are also recursive in C, so a deep enough
grammar overflows the worker's stack, and a grammar whose leftmost paths multiply makes that
check take exponential time. So every grammar (given as `grammar`, converted from a
`response_format` JSON schema, or built from tool schemas) goes through `grammar_check`, a
faithful, iterative re-reading of llama.cpp's parser (`src/llama-grammar.cpp`: syntax, undefined
rules, the root rule, its repetition limit, left recursion) with limits of our own on size,
nesting and work. The worker checks once more against the model's vocabulary
(`inference.engine.grammar_sampler_check`), for token literals like `<think>` that only the model
can resolve.

JSON schemas are converted with llama-cpp-python's own converter (`json_schema_to_gbnf`),
loaded from its source file so that the web process never loads the native library. A few
bytes of schema can ask for gigabytes of grammar (`"maxLength": 100000000`), so `schema_check`
refuses such bounds before converting, cheaply and without recursion.

Every limit is documented in docs/protocol.md.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any

# llama.cpp's own: a repetition count above it is refused (or, for a maximum, made unbounded).
LLAMA_REPETITION_THRESHOLD = 2000
# Ours. A grammar typed by hand stays well inside them; a converted JSON schema may come close.
MAX_GRAMMAR_CHARS = 20_000
MAX_CONVERTED_GRAMMAR_CHARS = 400_000
MAX_GROUP_DEPTH = 1_100
MAX_RULES = 20_000
MAX_ELEMENTS = 400_000
# How many rule visits llama.cpp's left-recursion check and first stacks would make.
MAX_LEFTMOST_PATHS = 200_000

MAX_SCHEMA_DEPTH = 32
MAX_SCHEMA_NODES = 2_000
MAX_SCHEMA_CHARS = 64_000
# minLength, maxLength, minItems, maxItems, minProperties, maxProperties, and {m,n} in patterns.
MAX_SCHEMA_REPETITION = 1_000
SCHEMA_COUNT_KEYS = (
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
)

_TERMINAL = -1
_ALT = -2


class GrammarError(ValueError):
    """A grammar or schema that cannot be used; the message is a sentence for the user."""


def _is_word_char(char: str) -> bool:
    return ("a" <= char <= "z") or ("A" <= char <= "Z") or ("0" <= char <= "9") or char == "-"


@dataclass
class _Group:
    """A rule being parsed: a named rule at the top, a parenthesised group below it."""

    rule_id: int
    nested: bool
    symbols_before: int = 0
    elements: list[int] = field(default_factory=list)
    last_sym_start: int = 0
    n_prev_rules: int = 1


class _Parser:
    """llama.cpp's `llama_grammar_parser`, read iteratively. Rules are lists of elements: a
    rule id (a reference), `_TERMINAL` (a character, class or token) or `_ALT` (between
    alternatives); the end of a rule is implicit."""

    def __init__(self, text: str) -> None:
        self.src = text
        self.symbols: dict[str, int] = {}
        self.names: dict[int, str] = {}
        # What a person wrote: a generated rule (a group, a repetition) is named after its rule.
        self.written: dict[int, str] = {}
        self.rules: dict[int, list[int]] = {}
        self.elements = 0

    # -- characters --------------------------------------------------------------------------

    def _at(self, pos: int) -> str:
        return self.src[pos] if pos < len(self.src) else ""

    def _fail(self, what: str, pos: int) -> GrammarError:
        line = self.src.count("\n", 0, pos) + 1
        near = self.src[pos : pos + 20].split("\n")[0]
        where = f' near "{near}"' if near else " at the end"
        return GrammarError(f"is not valid GBNF: {what} on line {line}{where}.")

    def _space(self, pos: int, newline_ok: bool) -> int:
        while True:
            char = self._at(pos)
            if char == "#":
                while self._at(pos) not in ("", "\r", "\n"):
                    pos += 1
            elif char in (" ", "\t") or (newline_ok and char in ("\r", "\n")):
                pos += 1
            else:
                return pos

    def _name_end(self, pos: int) -> int:
        start = pos
        while _is_word_char(self._at(pos)):
            pos += 1
        if pos == start:
            raise self._fail("expected a rule name", start)
        return pos

    def _int_end(self, pos: int) -> int:
        start = pos
        while self._at(pos).isascii() and self._at(pos).isdigit():
            pos += 1
        if pos == start:
            raise self._fail("expected a number", start)
        return pos

    def _char_end(self, pos: int) -> int:
        """Past one character of a literal or class, escapes included."""
        char = self._at(pos)
        if char == "":
            raise self._fail("unexpected end of the grammar", pos)
        if char != "\\":
            return pos + 1
        escape = self._at(pos + 1)
        sizes = {"x": 2, "u": 4, "U": 8}
        if escape in sizes:
            digits = self.src[pos + 2 : pos + 2 + sizes[escape]]
            if len(digits) != sizes[escape] or any(
                c not in "0123456789abcdefABCDEF" for c in digits
            ):
                raise self._fail(f"\\{escape} needs {sizes[escape]} hex digits", pos)
            return pos + 2 + sizes[escape]
        if escape in ("t", "r", "n", "\\", '"', "[", "]", "-"):
            return pos + 2
        raise self._fail("unknown escape", pos)

    def _token_end(self, pos: int) -> int:
        """Past `<[id]>` or `<text>`; whether `<text>` is one token only the model can say."""
        if self._at(pos) != "<":
            raise self._fail("expected '<'", pos)
        end = self.src.find(">", pos)
        if end == -1:
            raise self._fail("expected '>'", pos)
        if self._at(pos + 1) == "[":
            digits_end = self._int_end(pos + 2)
            if self._at(digits_end) != "]" or self._at(digits_end + 1) != ">":
                raise self._fail("expected ']>'", digits_end)
            if int(self.src[pos + 2 : digits_end]) > 0xFFFFFFFF:
                raise self._fail("token id too big", pos)
            return digits_end + 2
        return end + 1

    # -- symbols and rules -------------------------------------------------------------------

    def _symbol(self, name: str) -> int:
        if name not in self.symbols:
            self.symbols[name] = len(self.symbols)
            self.names[self.symbols[name]] = name
        return self.symbols[name]

    def _new_symbol(self, base: str) -> int:
        if len(self.symbols) >= MAX_RULES:
            raise GrammarError(
                f"expands to more than {MAX_RULES} rules; use fewer or smaller repetitions."
            )
        rule_id = self._symbol(f"{base}_{len(self.symbols)}")
        self.written[rule_id] = base
        return rule_id

    def _add_rule(self, rule_id: int, elements: list[int]) -> None:
        self.rules[rule_id] = elements

    def _grow(self, count: int) -> None:
        self.elements += count
        if self.elements > MAX_ELEMENTS:
            raise GrammarError(
                f"expands to more than {MAX_ELEMENTS} symbols; use fewer or smaller repetitions."
            )

    def _repeat(self, group: _Group, low: int, high: int | None, pos: int, base: str) -> None:
        """`S{low,high}` as llama.cpp rewrites it: S copied `low` times, then a chain of
        optional rules (one rule that refers to itself when there is no maximum)."""
        rule = group.elements
        if group.last_sym_start == len(rule):
            raise self._fail("*, +, ? or { needs something before it", pos)
        previous = rule[group.last_sym_start :]
        total = high if high is not None and high > 0 else (low if low > 0 else 1)
        if group.n_prev_rules * total > LLAMA_REPETITION_THRESHOLD:
            raise GrammarError(
                "repeats rules more than llama.cpp allows "
                f"({LLAMA_REPETITION_THRESHOLD} in all); reduce the repetitions."
            )
        if low == 0:
            del rule[group.last_sym_start :]
        else:
            self._grow(len(previous) * (low - 1))
            rule.extend(previous * (low - 1))
        optional = 1 if high is None else high - low
        last = 0
        for index in range(optional):
            rec_id = self._new_symbol(base)
            self._grow(len(previous) + 2)
            refers = [rec_id if high is None else last] if index > 0 or high is None else []
            self._add_rule(rec_id, [*previous, *refers, _ALT])
            last = rec_id
        if optional > 0:
            rule.append(last)
        group.n_prev_rules *= total

    def _braces(self, pos: int, nested: bool) -> tuple[int, int | None, int]:
        """`{m}`, `{m,}` or `{m,n}` after the '{': (m, n or None, the position after '}')."""
        pos = self._space(pos, nested)
        end = self._int_end(pos)
        low = int(self.src[pos:end])
        pos = self._space(end, nested)
        high: int | None
        if self._at(pos) == "}":
            high = low
        elif self._at(pos) == ",":
            pos = self._space(pos + 1, nested)
            high = None
            if self._at(pos).isascii() and self._at(pos).isdigit():
                end = self._int_end(pos)
                high = int(self.src[pos:end])
                pos = self._space(end, nested)
            if self._at(pos) != "}":
                raise self._fail("expected '}'", pos)
        else:
            raise self._fail("expected ',' or '}'", pos)
        if low > LLAMA_REPETITION_THRESHOLD:
            raise GrammarError(
                f"repeats something {low} times; llama.cpp allows at most "
                f"{LLAMA_REPETITION_THRESHOLD}."
            )
        if high is not None and high > LLAMA_REPETITION_THRESHOLD:
            high = None  # llama.cpp's reading: no maximum
        return low, high, pos + 1

    def _alternates(self, pos: int, rule_id: int, name: str) -> int:
        """One rule's alternatives, with its groups parsed on an explicit stack."""
        stack = [_Group(rule_id, nested=False)]
        while True:
            group = stack[-1]
            char = self._at(pos)
            if char == '"':
                pos += 1
                group.last_sym_start, group.n_prev_rules = len(group.elements), 1
                while self._at(pos) != '"':
                    pos = self._char_end(pos)
                    group.elements.append(_TERMINAL)
                    self._grow(1)
                pos = self._space(pos + 1, group.nested)
            elif char == "[":
                pos += 1
                if self._at(pos) == "^":
                    pos += 1
                group.last_sym_start, group.n_prev_rules = len(group.elements), 1
                while self._at(pos) != "]":
                    pos = self._char_end(pos)
                    group.elements.append(_TERMINAL)
                    self._grow(1)
                    if self._at(pos) == "-" and self._at(pos + 1) != "]":
                        pos = self._char_end(pos + 1)
                        group.elements.append(_TERMINAL)
                        self._grow(1)
                pos = self._space(pos + 1, group.nested)
            elif char in ("<", "!"):
                pos = self._token_end(pos + 1 if char == "!" else pos)
                group.last_sym_start, group.n_prev_rules = len(group.elements), 1
                group.elements.append(_TERMINAL)
                self._grow(1)
                pos = self._space(pos, group.nested)
            elif char and _is_word_char(char):
                end = self._name_end(pos)
                group.last_sym_start, group.n_prev_rules = len(group.elements), 1
                group.elements.append(self._symbol(self.src[pos:end]))
                self._grow(1)
                pos = self._space(end, group.nested)
            elif char == "(":
                if len(stack) >= MAX_GROUP_DEPTH:
                    raise GrammarError(
                        f"nests groups more than {MAX_GROUP_DEPTH} deep; flatten it."
                    )
                before = len(self.symbols)
                stack.append(_Group(self._new_symbol(name), nested=True, symbols_before=before))
                pos = self._space(pos + 1, True)
            elif char == ".":
                group.last_sym_start, group.n_prev_rules = len(group.elements), 1
                group.elements.append(_TERMINAL)
                self._grow(1)
                pos = self._space(pos + 1, group.nested)
            elif char in ("*", "+", "?"):
                low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
                self._repeat(group, low, high, pos, name)
                pos = self._space(pos + 1, group.nested)
            elif char == "{":
                low, high, after = self._braces(pos + 1, group.nested)
                self._repeat(group, low, high, pos, name)
                pos = self._space(after, group.nested)
            elif char == "|":
                group.elements.append(_ALT)
                self._grow(1)
                group.last_sym_start, group.n_prev_rules = len(group.elements), 1
                pos = self._space(pos + 1, True)
            else:
                self._add_rule(group.rule_id, group.elements)
                if len(stack) == 1:
                    return pos
                stack.pop()
                if char != ")":
                    raise self._fail("expected ')'", pos)
                parent = stack[-1]
                parent.n_prev_rules = max(1, len(self.symbols) - group.symbols_before)
                parent.last_sym_start = len(parent.elements)
                parent.elements.append(group.rule_id)
                self._grow(1)
                pos = self._space(pos + 1, parent.nested)

    def parse(self) -> None:
        pos = self._space(0, True)
        while pos < len(self.src):
            end = self._name_end(pos)
            name = self.src[pos:end]
            rule_id = self._symbol(name)
            pos = self._space(end, False)
            if self.src[pos : pos + 3] != "::=":
                raise self._fail("expected '::='", pos)
            pos = self._alternates(self._space(pos + 3, True), rule_id, name)
            if self._at(pos) == "\r":
                pos += 2 if self._at(pos + 1) == "\n" else 1
            elif self._at(pos) == "\n":
                pos += 1
            elif pos < len(self.src):
                raise self._fail("expected the end of the line", pos)
            pos = self._space(pos, True)
        if not self.rules:
            raise GrammarError("is empty; write at least a root rule (root ::= ...).")
        for rule_id, name in self.names.items():
            if rule_id not in self.rules:
                raise GrammarError(f"uses the rule {name!r} but never defines it.")
        if "root" not in self.symbols:
            raise GrammarError("has no root rule; the answer starts at root ::= ...")


def _rule_may_be_empty(elements: list[int]) -> bool:
    """llama.cpp's own test: the rule has an empty alternative (not: may derive nothing)."""
    at_start = True
    for element in [*elements, _ALT]:
        if element == _ALT:
            if at_start:
                return True
            at_start = True
        else:
            at_start = False
    return False


def _leftmost_refs(elements: list[int], may_be_empty: list[bool]) -> list[int]:
    """The rules llama.cpp's left-recursion check visits from this one, in its order: each
    alternative's first reference, and the next while the one before may be empty."""
    refs, follow = [], True
    for element in elements:
        if element >= 0 and follow:
            refs.append(element)
            follow = may_be_empty[element]
        else:
            follow = element == _ALT
    return refs


def _check_left_recursion(parser: _Parser) -> None:
    """llama.cpp refuses left recursion after parsing; its check re-enters a rule once per path
    that reaches it, so the number of such paths (counted here once per rule) is its cost."""
    count = len(parser.symbols)
    rules = [parser.rules.get(i, []) for i in range(count)]
    may_be_empty = [_rule_may_be_empty(rule) for rule in rules]
    paths = [0] * count
    state = [0] * count  # 0 unseen, 1 in progress, 2 done
    for start in range(count):
        if state[start]:
            continue
        state[start] = 1
        stack = [(start, iter(_leftmost_refs(rules[start], may_be_empty)))]
        while stack:
            rule_id, refs = stack[-1]
            child = next(refs, None)
            if child is None:
                stack.pop()
                state[rule_id] = 2
                paths[rule_id] = 1 + sum(
                    paths[r] for r in _leftmost_refs(rules[rule_id], may_be_empty)
                )
                if paths[rule_id] > MAX_LEFTMOST_PATHS:
                    raise GrammarError(
                        "has too many alternative paths at its start for llama.cpp to check "
                        "in reasonable time; simplify it."
                    )
            elif state[child] == 1:
                name = parser.written.get(child, parser.names[child])
                raise GrammarError(
                    f"is left-recursive in rule {name!r}, which llama.cpp does "
                    'not support; rewrite it with repetition (x ::= y ("," y)*).'
                )
            elif state[child] == 0:
                state[child] = 1
                stack.append((child, iter(_leftmost_refs(rules[child], may_be_empty))))


def grammar_check(text: str, *, limit: int = MAX_GRAMMAR_CHARS) -> str:
    """The grammar, if llama.cpp will accept it within our limits; GrammarError otherwise."""
    if not isinstance(text, str):
        raise GrammarError("must be a string.")
    if len(text) > limit:
        raise GrammarError(f"is longer than {limit} characters.")
    if "\x00" in text:
        raise GrammarError("contains a NUL character.")
    parser = _Parser(text)
    parser.parse()
    _check_left_recursion(parser)
    return text


# -- JSON schemas ------------------------------------------------------------------------------


@cache
def _converter() -> ModuleType:
    """llama-cpp-python's `llama_grammar` module (pure Python), loaded from its file: importing
    it as `llama_cpp.llama_grammar` would run `llama_cpp/__init__.py`, which loads llama.cpp."""
    package = importlib.util.find_spec("llama_cpp")
    if package is None or not package.submodule_search_locations:
        raise RuntimeError("llama-cpp-python is not installed.")
    path = f"{next(iter(package.submodule_search_locations))}/llama_grammar.py"
    spec = importlib.util.spec_from_file_location("wizweb_llama_grammar", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def json_object_grammar() -> str:
    """Any JSON object (llama.cpp's own json.gbnf)."""
    return str(_converter().JSON_GBNF)


def _pattern_repetitions(pattern: str) -> int:
    """The largest {m,n} count in a regular expression, as the converter would expand it."""
    largest, number = 0, ""
    inside = False
    for char in pattern:
        if char == "{":
            inside, number = True, ""
        elif inside and char.isascii() and char.isdigit():
            number += char
            if len(number) > 7:
                return 10**7
        elif inside and char in ",}":
            largest = max(largest, int(number or 0))
            number = ""
            inside = char == ","
        else:
            inside = False
    return largest


def schema_check(schema: Any) -> None:
    """Refuse, cheaply and without recursion, a schema whose grammar would be huge or deep."""
    if not isinstance(schema, dict):
        raise GrammarError("must be a JSON object.")
    if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        raise GrammarError(f"is longer than {MAX_SCHEMA_CHARS} characters as JSON.")
    nodes = 0
    pending: list[tuple[Any, int]] = [(schema, 1)]
    while pending:
        node, depth = pending.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise GrammarError(f"has more than {MAX_SCHEMA_NODES} parts; simplify it.")
        if depth > MAX_SCHEMA_DEPTH:
            raise GrammarError(f"nests more than {MAX_SCHEMA_DEPTH} levels deep; flatten it.")
        if isinstance(node, dict):
            for key in SCHEMA_COUNT_KEYS:
                count = node.get(key)
                if isinstance(count, bool) or not isinstance(count, int | float):
                    continue
                if not 0 <= count <= MAX_SCHEMA_REPETITION:
                    raise GrammarError(
                        f"asks for {key} {count}; the limit is 0 to "
                        f"{MAX_SCHEMA_REPETITION}, since each unit becomes grammar."
                    )
            pattern = node.get("pattern")
            if isinstance(pattern, str) and _pattern_repetitions(pattern) > MAX_SCHEMA_REPETITION:
                raise GrammarError(
                    f"has a pattern that repeats more than {MAX_SCHEMA_REPETITION} times."
                )
            pending.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, list):
            pending.extend((value, depth + 1) for value in node)


def schema_to_grammar(schema: Any) -> str:
    """The grammar of a JSON schema, checked like any other; GrammarError with a sentence."""
    schema_check(schema)
    try:
        grammar = _converter().json_schema_to_gbnf(json.dumps(schema))
    except RecursionError:
        raise GrammarError("nests too deeply to convert; flatten it.") from None
    except Exception as exc:  # the converter raises bare Exceptions and asserts on bad schemas
        raise GrammarError(f"cannot be used: {exc or type(exc).__name__}.") from None
    try:
        return grammar_check(grammar, limit=MAX_CONVERTED_GRAMMAR_CHARS)
    except GrammarError as exc:
        raise GrammarError(f"makes a grammar that {exc}") from None
