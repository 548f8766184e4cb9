"""The two shapes of a log line, chosen by WIZ_LOG_FORMAT: `plain` (text, then `key=value` for
each field) or `json` (one JSON object a line, through python-json-logger, for log collectors).

A field is a plain value (text, number, bool, None) that a record carries in `extra`
(`log.info("request", extra={"status": 200})`). Anything else a library puts there (Django's
`request` object, whose repr holds the query string) is left out of both shapes: a log line
says what happened, never what was typed."""

from __future__ import annotations

import json
import logging
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

_SCALARS = (str, int, float, bool, type(None))
_NOT_FIELDS = {*RESERVED_ATTRS, "message", "asctime", "taskName"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The plain values a record was given in `extra`, in the order given."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _NOT_FIELDS and not key.startswith("_") and isinstance(value, _SCALARS)
    }


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str) and value and not any(c.isspace() or c in "\"'=" for c in value):
        return value
    return json.dumps(value, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """The usual line, then its fields as `key=value` (values with spaces quoted)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = record_fields(record)
        if not fields:
            return line
        return line + " " + " ".join(f"{key}={_shown(value)}" for key, value in fields.items())


class JsonLogFormatter(JsonFormatter):
    """python-json-logger's formatter, keeping only the plain values of `extra` (see above)."""

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in log_data.items() if isinstance(value, _SCALARS)}
