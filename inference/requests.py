"""What a caller hands the engine and what it gets back, with no model behind them.

Kept apart from `inference.engine` so that the web process, which builds requests and reads
events but never runs a model, does not import llama.cpp.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inference.sampling import Sampling

# Used when a model's GGUF has no chat template: ChatML, what most small chat models speak.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class GenerationAborted(Exception):
    """Stopped before its first token (while its prompt was being measured)."""


class GrammarRefused(ValueError):
    """llama.cpp refused a grammar for this model (a token literal it does not have)."""


class ReasoningRefused(ValueError):
    """The model cannot honour a reasoning option (it does not think, or cannot be switched)."""


class PromptTooLong(Exception):
    """The prompt leaves no room for an answer in the model's context window."""

    def __init__(self, prompt_tokens: int, n_ctx: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
        super().__init__(
            f"The prompt is {prompt_tokens} tokens but the model's context holds {n_ctx}; "
            f"shorten it by at least {prompt_tokens - n_ctx + 1} tokens or start a new "
            "conversation."
        )


@dataclass(frozen=True)
class GenerationRequest:
    """A chat (`messages`, formatted by the model's template) or a raw `prompt`."""

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    sampling: Sampling = field(default_factory=Sampling)


@dataclass(frozen=True)
class Trimmed:
    """Earlier turns left out so that the prompt fits the context window."""

    turns: int
    tokens: int


@dataclass(frozen=True)
class TextDelta:
    text: str
    channel: str = "content"  # or "reasoning": a thinking model's thoughts


@dataclass(frozen=True)
class PromptProgress:
    """How far the reading of a long prompt has got: `done` of its `total` tokens (a cached
    start counts as read). Only for a prompt read in more than one step, before its first
    token; the last one of an answer has `done == total`."""

    done: int
    total: int


@dataclass(frozen=True)
class Finished:
    content: str
    finish_reason: str  # stop, length, aborted
    prompt_tokens: int
    completion_tokens: int
    prompt_ms: float
    generation_ms: float
    seed: int
    cached_tokens: int = 0  # leading prompt tokens whose cache was reused
    trimmed: Trimmed | None = None
    preemptions: int = 0  # times it was paused for a more urgent answer
    reasoning: str = ""  # a thinking model's thoughts, apart from `content`
    reasoning_tokens: int = 0  # of `completion_tokens`, those spent thinking
    reasoning_ms: float = 0.0  # from the first token to the end of the thinking
    note: str = ""  # something the reader should know, e.g. a thinking block never closed

    @property
    def tokens_per_s(self) -> float:
        if self.generation_ms <= 0:
            return 0.0
        return self.completion_tokens / (self.generation_ms / 1000)


Event = TextDelta | PromptProgress | Finished
