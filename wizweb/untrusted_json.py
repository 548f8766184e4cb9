"""Parsing JSON that comes from outside: socket frames and request bodies.

`json.loads` accepts documents that break the server later: nesting deep enough to raise a
`RecursionError` (not a `ValueError`) in the parser itself, or, less deep, in any recursive code
that touches the value afterwards (encoders, msgpack on the channel layer, the database); escaped
lone surrogates (`"\\ud800"`), which decode to a str that cannot be encoded as UTF-8 when the
value is sent on or saved; and `NaN`/`Infinity`, which are not JSON and which a browser cannot
parse back. `untrusted_json_parse` refuses all of them with an `UntrustedJSONError`, a
`ValueError` whose message is a sentence for the person who sent it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Deeper than any request or frame we define (options with a JSON schema reach a dozen levels),
# far below where recursive code in the standard library and msgpack gives up.
MAX_JSON_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")


class UntrustedJSONError(ValueError):
    """The document cannot be used; the message says why, for the person who sent it."""


def _constant(name: str) -> Any:
    raise UntrustedJSONError(f"{name} is not a JSON number; send a finite number or null.")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UntrustedJSONError(f"The number {text[:40]} is too large; send a finite number.")
    return value


def untrusted_json_parse(text: str | bytes) -> Any:
    """The value of `text`, or `UntrustedJSONError` saying why it cannot be used.

    Refused: anything that is not JSON (bytes that are not UTF-8 included), containers nested
    deeper than `MAX_JSON_DEPTH`, a string or key holding a lone surrogate, and NaN, Infinity or
    a number too large for a float.
    """
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float)
    except UntrustedJSONError:
        raise
    except RecursionError:
        raise _too_deep() from None
    except json.JSONDecodeError as exc:
        raise UntrustedJSONError(
            f"This is not valid JSON ({exc.msg.lower()} at character {exc.pos})."
        ) from None
    except UnicodeDecodeError:
        raise UntrustedJSONError("This is not valid JSON: it is not UTF-8 text.") from None
    except ValueError:  # Python refuses to read an integer of more than 4300 digits
        raise UntrustedJSONError("A number is too long; send at most 4300 digits.") from None
    _check(value)
    return value


def _too_deep() -> UntrustedJSONError:
    return UntrustedJSONError(
        f"The JSON is nested more than {MAX_JSON_DEPTH} levels deep; send a flatter document."
    )


def _check(value: Any) -> None:
    """Depth and lone surrogates, walked with a stack: the point is to survive deep values."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise UntrustedJSONError(
                    "A string holds a lone UTF-16 surrogate (such as \\ud800), which is not "
                    "text; send valid Unicode."
                )
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise _too_deep()
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
