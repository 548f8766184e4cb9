"""Prometheus counters and histograms of answers (served by wizweb.metrics at /metrics).

Each is written by the process where the event happens: a request is counted by the web process
when its answer is queued (on commit), an answer by whichever process saves its end (the
inference worker, the reaper of a dead worker's answers, an abort in the queue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from chat.models import Message

ANSWER_REQUESTS = Counter(
    "wiz_answer_requests", "Answers asked for (queued), by model and tier.", ["model", "tier"]
)
ANSWERS = Counter(
    "wiz_answers", "Answers finished, by model and finish reason.", ["model", "finish_reason"]
)
PROMPT_TOKENS = Counter("wiz_prompt_tokens", "Prompt tokens of finished answers.", ["model"])
COMPLETION_TOKENS = Counter("wiz_completion_tokens", "Tokens written in answers.", ["model"])
CACHED_TOKENS = Counter(
    "wiz_cached_prompt_tokens", "Prompt tokens a worker had evaluated already.", ["model"]
)
TIME_TO_FIRST_TOKEN = Histogram(
    "wiz_time_to_first_token_seconds",
    "From an answer's start on a worker to its first token (reading the prompt).",
    ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
)
QUEUE_WAIT = Histogram(
    "wiz_queue_wait_seconds",
    "From an answer being asked for to a worker starting it.",
    ["model"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)


def answer_requested(message: Message) -> None:
    ANSWER_REQUESTS.labels(message.model_name, message.priority).inc()


def generation_observe(message: Message) -> None:
    """Count the end of `message` as saved (its row's fields)."""
    model = message.model_name
    ANSWERS.labels(model, message.finish_reason or message.state).inc()
    if message.prompt_tokens:
        PROMPT_TOKENS.labels(model).inc(message.prompt_tokens)
    if message.completion_tokens:
        COMPLETION_TOKENS.labels(model).inc(message.completion_tokens)
    if message.cached_tokens:
        CACHED_TOKENS.labels(model).inc(message.cached_tokens)
    timings = message.timings or {}
    if timings.get("ttft_ms") is not None:
        TIME_TO_FIRST_TOKEN.labels(model).observe(timings["ttft_ms"] / 1000)
    if timings.get("queue_ms") is not None:
        QUEUE_WAIT.labels(model).observe(timings["queue_ms"] / 1000)
