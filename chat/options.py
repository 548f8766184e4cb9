"""The one place where generation options are checked: the chat socket and the API both call
`options_parse`, which names the first bad key in an `InvalidOptions` error."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings

from chat.grammar import GrammarError, grammar_check, json_object_grammar, schema_to_grammar
from chat.tools import ToolRequest, ToolsError, ToolSpec, tools_parse
from inference.presence import PRIORITIES
from inference.sampling import Sampling

# Every option `options_parse` takes (the socket's `options`, a conversation's settings, the
# OpenAI adapter's parameters; `model` and `system_prompt` reach that adapter its own way).
OPTION_KEYS = frozenset(
    {
        "model",
        "system_prompt",
        "temperature",
        "top_p",
        "min_p",
        "top_k",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "max_tokens",
        "stop",
        "response_format",
        "grammar",
        "response_prefix",
        "reasoning",
        "reasoning_budget",
        "reasoning_effort",
        "priority",
        "tools",
        "tool_choice",
    }
)
MAX_STOP_STRINGS = 4
MAX_SYSTEM_PROMPT_CHARS = 20_000
# OpenAI's `reasoning_effort` as a thinking budget in tokens (None: as long as it takes);
# "none" switches thinking off. Small models think long: "low" still lets them check a sum.
REASONING_EFFORT_BUDGETS: dict[str, int | None] = {
    "minimal": 128,
    "low": 512,
    "medium": 2048,
    "high": None,
}


def max_priority_for(user: Any) -> str:
    """The most urgent tier a user may ask for: staff may jump the queue, others not."""
    return "high" if getattr(user, "is_staff", False) else "normal"


class InvalidOptions(ValueError):
    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"Option {key!r}: {message}")


@dataclass(frozen=True)
class GenerationOptions:
    sampling: Sampling = field(default_factory=Sampling)
    model: str | None = None
    system_prompt: str = ""
    priority: str = "normal"
    tools: ToolRequest | None = None
    # What the client asked for, as given (stored with the message).
    given: dict[str, Any] = field(default_factory=dict)


def _number(key: str, value: Any, low: float, high: float, *, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOptions(key, "must be a number.")
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        raise InvalidOptions(key, "must be a whole number.")
    if not low <= value <= high:
        raise InvalidOptions(key, f"must be between {low:g} and {high:g}, not {value}.")
    return int(value) if integer else float(value)


def _text(key: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidOptions(key, "must be a string.")
    if len(value) > limit:
        raise InvalidOptions(key, f"is longer than {limit} characters.")
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise InvalidOptions("stop", "must be a string or a list of non-empty strings.")
    if len(value) > MAX_STOP_STRINGS:
        raise InvalidOptions("stop", f"takes at most {MAX_STOP_STRINGS} strings.")
    return tuple(value)


def _grammar_from_response_format(value: Any) -> str | None:
    if not isinstance(value, dict) or "type" not in value:
        raise InvalidOptions("response_format", 'must be an object with a "type".')
    kind = value["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return json_object_grammar()
    if kind == "json_schema":
        wrapper = value.get("json_schema")
        schema = wrapper.get("schema") if isinstance(wrapper, dict) else None
        if not isinstance(schema, dict):
            raise InvalidOptions(
                "response_format", 'json_schema needs {"json_schema": {"schema": {...}}}.'
            )
        try:
            return schema_to_grammar(schema)
        except GrammarError as exc:
            raise InvalidOptions("response_format", f"the JSON schema {exc}") from None
    raise InvalidOptions("response_format", 'type must be "text", "json_object" or "json_schema".')


def _grammar(value: Any) -> str | None:
    if isinstance(value, str) and not value.strip():
        return None  # what llama.cpp makes of "" too
    try:
        return grammar_check(value)
    except GrammarError as exc:
        raise InvalidOptions("grammar", str(exc)) from None


def options_parse(raw: Any, *, max_priority: str = "normal") -> GenerationOptions:
    """Check every option of a request; unknown keys and out-of-range values are refused."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidOptions("options", "must be an object.")
    values: dict[str, Any] = {}
    model = None
    system_prompt = ""
    priority = "normal"
    grammar = None
    for key, value in raw.items():
        if value is None:
            continue  # "not given", whatever the key
        if key not in OPTION_KEYS:
            raise InvalidOptions(key, "is not a known option.")
        match key:
            case "model":
                model = _text(key, value, 200) or None
            case "system_prompt":
                system_prompt = _text(key, value, MAX_SYSTEM_PROMPT_CHARS)
            case "temperature":
                values[key] = _number(key, value, 0, 2)
            case "top_p" | "min_p":
                values[key] = _number(key, value, 0, 1)
            case "top_k":
                values[key] = _number(key, value, 0, 1000, integer=True)
            case "repeat_penalty":
                values[key] = _number(key, value, 0.5, 2)
            case "presence_penalty" | "frequency_penalty":
                values[key] = _number(key, value, -2, 2)
            case "seed":
                values[key] = _number(key, value, 0, 2**31 - 1, integer=True)
            case "max_tokens":
                values[key] = _number(key, value, 1, settings.WIZ_MAX_CONTEXT, integer=True)
            case "stop":
                values[key] = _stop(value)
            case "response_format":
                if grammar is not None:
                    raise InvalidOptions(key, "cannot be combined with grammar.")
                grammar = _grammar_from_response_format(value)
            case "grammar":
                if grammar is not None:
                    raise InvalidOptions(key, "cannot be combined with response_format.")
                grammar = _grammar(value)
            case "response_prefix":
                values[key] = _text(key, value, 2000)
            case "reasoning":
                if not isinstance(value, bool):
                    raise InvalidOptions(key, "must be true or false.")
                values[key] = value
            case "reasoning_budget":
                values[key] = _number(key, value, 0, settings.WIZ_MAX_CONTEXT, integer=True)
            case "reasoning_effort":
                if value == "none":
                    values["reasoning"] = False
                elif value in REASONING_EFFORT_BUDGETS:
                    values["reasoning_budget"] = REASONING_EFFORT_BUDGETS[value]
                else:
                    raise InvalidOptions(
                        key, 'must be "none", "minimal", "low", "medium" or "high".'
                    )
            case "priority":
                if value not in PRIORITIES:
                    raise InvalidOptions(key, 'must be "high", "normal" or "low".')
                if PRIORITIES.index(value) < PRIORITIES.index(max_priority):
                    raise InvalidOptions(
                        key, f'"{value}" is above what your account may ask for ({max_priority}).'
                    )
                priority = value
            case "tools" | "tool_choice":
                pass  # checked together below
            case _:
                raise AssertionError(f"{key} is in OPTION_KEYS but options_parse skips it")
    if "reasoning_effort" in raw and "reasoning_budget" in raw:
        raise InvalidOptions("reasoning_effort", "cannot be combined with reasoning_budget.")
    if values.get("reasoning") is False and values.get("reasoning_budget") is not None:
        raise InvalidOptions("reasoning_budget", "needs reasoning on; leave one of them out.")
    if values.get("reasoning_budget") is not None and (grammar is not None or raw.get("tools")):
        raise InvalidOptions(
            "reasoning_budget", "cannot be combined with grammar, response_format or tools."
        )
    if "max_tokens" not in values:
        values["max_tokens"] = settings.WIZ_DEFAULT_MAX_TOKENS
    try:
        tools = tools_parse(raw.get("tools"), raw.get("tool_choice"))
    except ToolsError as exc:
        raise InvalidOptions(exc.key, str(exc)) from None
    if tools is not None and grammar is not None:
        raise InvalidOptions("tools", "cannot be combined with grammar or response_format.")
    return GenerationOptions(
        tools=tools,
        sampling=Sampling(grammar=grammar, **values),
        model=model,
        system_prompt=system_prompt,
        priority=priority,
        given={k: v for k, v in raw.items() if v is not None},
    )


def options_stored(options: GenerationOptions) -> dict[str, Any]:
    """The parsed options as a message keeps them (`Message.parsed_options`): plain JSON from
    which the worker rebuilds them with `options_stored_read`, neither checked nor converted
    again (a JSON schema's grammar, a tool's call grammar, the priority allowed)."""
    sampling = asdict(options.sampling)
    sampling["stop"] = list(options.sampling.stop)
    tools = options.tools
    return {
        "sampling": sampling,
        "model": options.model,
        "system_prompt": options.system_prompt,
        "priority": options.priority,
        "tools": None
        if tools is None
        else {"choice": tools.choice, "specs": [spec.as_json() for spec in tools.tools]},
    }


def options_stored_read(stored: dict[str, Any], *, given: dict[str, Any]) -> GenerationOptions:
    """`options_stored`'s JSON back as options. A message queued by an older version has none:
    what it was given is parsed again (it was checked when it was sent)."""
    if not stored:
        return options_parse(given, max_priority="high")
    sampling = {**stored["sampling"], "stop": tuple(stored["sampling"]["stop"])}
    tools = stored["tools"]
    return GenerationOptions(
        sampling=Sampling(**sampling),
        model=stored["model"],
        system_prompt=stored["system_prompt"],
        priority=stored["priority"],
        tools=None
        if tools is None
        else ToolRequest(tuple(ToolSpec(**spec) for spec in tools["specs"]), tools["choice"]),
        given=given,
    )


def options_model_check(options: GenerationOptions, *, model_name: str, thinks: bool) -> None:
    """Refuse, before anything is queued, the reasoning options a model cannot honour: a model
    that does not think cannot be asked to, nor given a thinking budget. (Off is always fine.)
    The worker checks again against the template it loaded (`inference.engine`)."""
    sampling = options.sampling
    if thinks:
        return
    if sampling.reasoning is True:
        key = "reasoning"
    elif sampling.reasoning_budget is not None:
        key = "reasoning_effort" if "reasoning_effort" in options.given else "reasoning_budget"
    else:
        return
    raise InvalidOptions(
        key,
        f"{model_name} does not think (its chat template has no thinking markers); "
        "leave this out, or pick a thinking model.",
    )
