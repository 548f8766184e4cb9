"""GET /metrics: who may read it, and counters that move by exactly what a real answer did
(scraped from the real daphne, written by the real worker, read with prometheus_client's own
parser)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest
import websockets
from django.conf import settings
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from chat.models import Message
from tests.conftest import session_cookie
from tests.processes import Child, wait_for
from wizweb.apikeys import apikey_create

pytestmark = pytest.mark.django_db(transaction=True)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parsed(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(base_url: str) -> Samples:
    """/metrics from this machine (daphne sees 127.0.0.1)."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return parsed(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_real_answer_moves_the_counters_by_exactly_its_figures(
    owner: Any, default_model: Any, web_server: str, inference_worker: Child
) -> None:
    model = default_model.name
    api_key = apikey_create(user=owner, name="script", keep_history=True)
    before = scrape(web_server)
    request = urllib.request.Request(
        f"{web_server}/v1/chat/completions",
        data=json.dumps(
            {
                "model": model,
                "messages": [{"role": "user", "content": "Name a colour."}],
                "max_tokens": 12,
                "temperature": 0,
            }
        ).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key.secret}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
    (answer,) = Message.objects.filter(conversation__owner=owner, role="assistant")
    assert answer.state == "done" and answer.completion_tokens
    # The request's line is counted when its response has gone out: after the body was read.
    after = wait_for(
        lambda: (
            s
            if value(
                s := scrape(web_server), "wiz_http_requests_total", method="POST", status="200"
            )
            > value(before, "wiz_http_requests_total", method="POST", status="200")
            else None
        ),
        timeout=30,
        what="the POST to be counted",
    )

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("wiz_http_requests_total", method="POST", status="200") == 1
    assert moved("wiz_answer_requests_total", model=model, tier="normal") == 1
    assert moved("wiz_answers_total", model=model, finish_reason=answer.finish_reason) == 1
    assert moved("wiz_prompt_tokens_total", model=model) == answer.prompt_tokens
    assert moved("wiz_completion_tokens_total", model=model) == answer.completion_tokens
    assert moved("wiz_time_to_first_token_seconds_count", model=model) == 1
    assert moved("wiz_time_to_first_token_seconds_sum", model=model) == pytest.approx(
        answer.timings["ttft_ms"] / 1000
    )
    assert moved("wiz_queue_wait_seconds_count", model=model) == 1
    assert moved("wiz_queue_wait_seconds_sum", model=model) == pytest.approx(
        answer.timings["queue_ms"] / 1000
    )
    # Live state, read from the worker's presence record and the queues.
    assert value(after, "wiz_redis_up") == 1
    assert value(after, "wiz_worker_up", worker="test-inference", host=_host(after)) == 1
    assert value(after, "wiz_model_loaded", worker="test-inference", model=model) == 1
    assert value(after, "wiz_worker_slots", worker="test-inference", state="total") >= 1
    assert value(after, "wiz_worker_memory_bytes", worker="test-inference", kind="resident") > 0
    assert ("wiz_queue_depth", (("queue", "generate"), ("tier", "normal"))) in after
    assert value(after, "wiz_downloads", state="running") == 0


def _host(samples: Samples) -> str:
    (host,) = {
        dict(labels)["host"]
        for (name, labels) in samples
        if name == "wiz_worker_up" and dict(labels)["worker"] == "test-inference"
    }
    return host


def test_it_counts_the_open_chat_sockets(owner: Any, web_server: str) -> None:
    def open_sockets() -> float:
        return value(scrape(web_server), "wiz_websockets_open", path="/ws/chat/")

    baseline = open_sockets()
    cookie = f"{settings.SESSION_COOKIE_NAME}={session_cookie(owner)}"

    async def hold_one_open() -> None:
        url = web_server.replace("http://", "ws://") + "/ws/chat/"
        async with websockets.connect(
            url, additional_headers={"Cookie": cookie}, origin=web_server
        ) as socket:
            await socket.send(json.dumps({"type": "ping"}))
            await socket.recv()
            await asyncio.to_thread(
                wait_for, lambda: open_sockets() == baseline + 1, timeout=30, what="one more"
            )

    asyncio.run(hold_one_open())
    wait_for(lambda: open_sockets() == baseline, timeout=30, what="the socket to be uncounted")


def test_only_this_machine_staff_keys_and_the_token_may_read_it(owner: Any, staff: Any) -> None:
    outside = "192.0.2.7"
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200
    refused = Client(REMOTE_ADDR=outside).get("/metrics")
    assert refused.status_code == 403
    assert "WIZ_METRICS_TOKEN" in refused.content.decode()

    staff_key = apikey_create(user=staff, name="prometheus").secret
    owner_key = apikey_create(user=owner, name="mine").secret
    for secret, status in ((staff_key, 200), (owner_key, 403), ("wiz-not-a-key", 403)):
        client = Client(REMOTE_ADDR=outside, HTTP_AUTHORIZATION=f"Bearer {secret}")
        assert client.get("/metrics").status_code == status

    # A non-staff session from elsewhere is refused too.
    session = Client(REMOTE_ADDR=outside)
    session.force_login(owner)
    assert session.get("/metrics").status_code == 403

    with override_settings(WIZ_METRICS_TOKEN="a long random metrics token"):
        good = Client(REMOTE_ADDR=outside, HTTP_AUTHORIZATION="Bearer a long random metrics token")
        assert good.get("/metrics").status_code == 200
        bad = Client(REMOTE_ADDR=outside, HTTP_AUTHORIZATION="Bearer a long random")
        assert bad.get("/metrics").status_code == 403
    # No token set: an empty bearer is no token.
    empty = Client(REMOTE_ADDR=outside, HTTP_AUTHORIZATION="Bearer ")
    assert empty.get("/metrics").status_code == 403
