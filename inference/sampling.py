"""How one answer is sampled: the settings a request asks for, already validated."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one request, checked by whoever made the request."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    grammar: str | None = None
    response_prefix: str = ""
    # Thinking models: None leaves thinking as the model's template has it; a budget in
    # tokens closes the thinking once spent and makes the answer start.
    reasoning: bool | None = None
    reasoning_budget: int | None = None
