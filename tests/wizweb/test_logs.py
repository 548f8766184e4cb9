"""The logs of real processes: one line per HTTP request (daphne) and one per generation (the
inference worker), as text or as JSON lines (WIZ_LOG_FORMAT=json); never a prompt's text, an
answer's, a query string or an API key."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from chat.models import Message
from tests.conftest import SECOND_MODEL, daphne_start, session_cookie, start_worker
from tests.processes import Child, wait_for
from wizweb.apikeys import apikey_create

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

# Words no log line has any other reason to hold; the prompt asks for them back, so the
# answer is likely to hold them too.
CODEWORD = "quintessential-marmalade-4417"
PROMPT = f"Repeat this codeword exactly: {CODEWORD}."


class LogTail:
    """What a child process writes to its log from now on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = path.stat().st_size

    def text(self) -> str:
        with self.path.open("rb") as log:
            log.seek(self.start)
            return log.read().decode(errors="replace")

    def lines(self) -> list[str]:
        return self.text().splitlines()


def post_json(url: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def stream_lines(url: str, body: dict[str, Any], headers: dict[str, str]) -> list[str]:
    request = urllib.request.Request(
        url,
        data=json.dumps({**body, "stream": True}).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return [line.decode().strip() for line in response if line.strip()]


def get(url: str, headers: dict[str, str]) -> int:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        return int(r.status)


def answers_of(owner: Any) -> list[Message]:
    return list(
        Message.objects.filter(conversation__owner=owner, role="assistant").order_by("created_at")
    )


def test_it_logs_requests_and_generations_as_text_without_prompts_or_keys(
    owner: Any, default_model: Any, web_server: str, inference_worker: Child, log_dir: Path
) -> None:
    web_log = LogTail(log_dir / "daphne.log")
    worker_log = LogTail(inference_worker.log_path)
    api_key = apikey_create(user=owner, name="script", keep_history=True)
    auth = {"Authorization": f"Bearer {api_key.secret}"}
    body = {
        "model": default_model.name,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 16,
        "temperature": 0,
    }
    completion = post_json(f"{web_server}/v1/chat/completions", body, auth)
    streamed = stream_lines(f"{web_server}/v1/chat/completions", body, auth)
    assert streamed[-1] == "data: [DONE]"
    cookie = f"{settings.SESSION_COOKIE_NAME}={session_cookie(owner)}"
    assert get(f"{web_server}/api/conversations/?q={CODEWORD}", {"Cookie": cookie}) == 200

    # One line per request, each with its user; the streamed one once its stream has ended.
    def request_lines() -> list[str]:
        return [line for line in web_log.lines() if " wizweb.requests: " in line]

    wait_for(lambda: len(request_lines()) >= 3, timeout=30, what="three request lines")
    posts = [line for line in request_lines() if "POST /v1/chat/completions 200" in line]
    assert len(posts) == 2, request_lines()
    for line in posts:
        assert "user=alice" in line and f"api_key={api_key.api_key.pk}" in line
        assert "outcome=complete" in line and "ms=" in line
    listing = next(line for line in request_lines() if "GET /api/conversations/ 200" in line)
    assert "user=alice" in listing and "path=/api/conversations/ " in listing

    # One line per generation, with the model, the real token counts and the timings.
    answers = answers_of(owner)
    assert len(answers) == 2 and all(a.state == "done" for a in answers)
    assert completion["usage"]["completion_tokens"] == answers[0].completion_tokens

    def generation_lines() -> list[str]:
        return [line for line in worker_log.lines() if " chat.generations: " in line]

    wait_for(lambda: len(generation_lines()) >= 2, timeout=30, what="two generation lines")
    for answer in answers:
        line = next(line for line in generation_lines() if f"message_id={answer.id}" in line)
        assert "user=alice" in line
        assert f"model={json.dumps(default_model.name)}" in line
        assert "worker=test-inference" in line
        assert "state=done" in line
        assert f"prompt_tokens={answer.prompt_tokens} " in line
        assert f"completion_tokens={answer.completion_tokens} " in line
        assert f"ttft_ms={answer.timings['ttft_ms']} " in line

    for log in (web_log.text(), worker_log.text()):
        assert CODEWORD not in log
        assert api_key.secret not in log
        for answer in answers:
            if len(answer.content) >= 8:  # shorter could be any word of a log line
                assert answer.content not in log


@pytest.fixture
def json_processes(second_model: Any, log_dir: Path) -> Iterator[tuple[str, Child, Child]]:
    """daphne and a worker pinned to the second model, both with WIZ_LOG_FORMAT=json."""
    daphne, url = daphne_start("daphne-json", log_dir, WIZ_LOG_FORMAT="json")
    try:
        worker = start_worker("json-worker", log_dir, model=SECOND_MODEL, WIZ_LOG_FORMAT="json")
    except BaseException:
        daphne.stop()
        raise
    yield url, daphne, worker
    worker.stop()
    daphne.stop()


# The start of a line in the plain format (see settings.LOGGING).
PLAIN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")


def json_records(child: Child) -> list[dict[str, Any]]:
    """Every line the child logged through Python's logging, each one JSON object. (llama.cpp
    writes its own lines to stderr from C, past Python's logging: those are not JSON.)"""
    records = []
    for line in child.output().splitlines():
        assert not PLAIN_LINE.match(line), line
        if line.startswith("{"):
            record = json.loads(line)
            assert isinstance(record, dict), line
            records.append(record)
    return records


def test_it_logs_json_lines_when_asked(
    owner: Any, json_processes: tuple[str, Child, Child]
) -> None:
    url, daphne, worker = json_processes
    api_key = apikey_create(user=owner, name="collector", keep_history=True)
    body = {
        "model": SECOND_MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 16,
        "temperature": 0,
    }
    post_json(f"{url}/v1/chat/completions", body, {"Authorization": f"Bearer {api_key.secret}"})
    (answer,) = answers_of(owner)

    def request_record() -> dict[str, Any] | None:
        return next(
            (
                r
                for r in json_records(daphne)
                if r.get("logger") == "wizweb.requests" and r.get("path") == "/v1/chat/completions"
            ),
            None,
        )

    def generation_record() -> dict[str, Any] | None:
        return next(
            (r for r in json_records(worker) if r.get("message_id") == str(answer.id)), None
        )

    request = wait_for(request_record, timeout=30, what="the request's JSON line")
    assert request["level"] == "INFO" and request["time"]
    assert request["method"] == "POST" and request["status"] == 200
    assert request["user"] == "alice" and request["api_key"] == api_key.api_key.pk
    assert request["outcome"] == "complete" and request["ms"] > 0
    generation = wait_for(generation_record, timeout=30, what="the generation's JSON line")
    assert generation["logger"] == "chat.generations"
    assert generation["user"] == "alice" and generation["user_id"] == owner.pk
    assert generation["model"] == SECOND_MODEL and generation["worker"] == "json-worker"
    assert generation["state"] == "done"
    assert generation["prompt_tokens"] == answer.prompt_tokens
    assert generation["completion_tokens"] == answer.completion_tokens
    assert generation["queue_ms"] == answer.timings["queue_ms"]
    assert generation["tokens_per_s"] == answer.timings["tokens_per_s"]
    for child in (daphne, worker):
        assert CODEWORD not in child.output()
        assert api_key.secret not in child.output()
