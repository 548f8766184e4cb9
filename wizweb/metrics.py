"""GET /metrics: Prometheus' text format, for this machine, staff API keys and the holder of
WIZ_METRICS_TOKEN.

Two sources, each the right one for what it measures:

- **Counters and histograms** (HTTP requests, answers, tokens, time to first token, queue wait)
  and the open-sockets gauge are written by the process where the event happens (daphne, an
  inference worker) with prometheus_client's multiprocess mode: each process keeps its values in
  mmapped files in settings.METRICS_DIR, and a scrape adds them up. Counters of a process that
  has exited stay in the sum, as Prometheus expects of a counter.
- **Live state** (queue depths, workers, their models, memory, slots and tokens/s, downloads) is
  read at scrape time from where it already lives: rq's queues and the workers' presence records
  in Redis, and the download rows. So workers on other machines are in it too.
"""

from __future__ import annotations

import atexit
import hmac
import ipaddress
import os
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from wizweb.apikeys import apikey_from_request

HTTP_REQUESTS = Counter(
    "wiz_http_requests", "HTTP requests answered, by method and status.", ["method", "status"]
)
# livesum: the sockets of the processes alive now; daphne marks itself dead when it exits.
WEBSOCKETS_OPEN = Gauge(
    "wiz_websockets_open", "WebSockets open, by path.", ["path"], multiprocess_mode="livesum"
)

FORBIDDEN = (
    "Metrics are for this machine, a staff user's API key or WIZ_METRICS_TOKEN "
    "(Authorization: Bearer …)."
)


def _from_this_machine(request: HttpRequest) -> bool:
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def metrics_may_read(request: HttpRequest) -> bool:
    if _from_this_machine(request):
        return True
    token = settings.WIZ_METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
        return True
    api_key = apikey_from_request(request)
    return api_key is not None and api_key.user.is_staff


class LiveStateCollector(Collector):
    """What is true now, read at each scrape from Redis and the database."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._redis_state()
        yield from self._downloads()

    def _redis_state(self) -> Iterator[GaugeMetricFamily]:
        import redis
        from rq import Queue

        from inference.presence import PRIORITIES, worker_states
        from wizweb.redis_server import redis_connection

        up = GaugeMetricFamily("wiz_redis_up", "Whether Redis answers (1) or not (0).")
        try:
            connection = redis_connection()
            workers = worker_states(connection)
            queues = [q for q in Queue.all(connection=connection) if q.name.startswith("generate")]
            depths = [(q.name, q.count) for q in queues]
        except (redis.RedisError, OSError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        depth = GaugeMetricFamily(
            "wiz_queue_depth", "Answers waiting in a generation queue.", labels=["queue", "tier"]
        )
        for name, count in sorted(depths):
            bases = [*settings.GENERATION_QUEUES, settings.BACKGROUND_QUEUE]
            tiers = [
                p
                for p, base in zip([*PRIORITIES, "background"], bases, strict=True)
                if name == base or name.startswith(base + ".")
            ]
            depth.add_metric([name, tiers[0] if tiers else ""], count)
        yield depth

        worker_up = GaugeMetricFamily(
            "wiz_worker_up", "Inference workers alive (presence record).", labels=["worker", "host"]
        )
        speed = GaugeMetricFamily(
            "wiz_worker_tokens_per_second",
            "Tokens a worker wrote per second over the last few seconds, all answers together.",
            labels=["worker"],
        )
        slots = GaugeMetricFamily(
            "wiz_worker_slots", "A worker's answer slots.", labels=["worker", "state"]
        )
        memory = GaugeMetricFamily(
            "wiz_worker_memory_bytes",
            "A worker's memory: resident, held by models (estimate), budget, prompt cache.",
            labels=["worker", "kind"],
        )
        loaded = GaugeMetricFamily(
            "wiz_model_loaded", "Models loaded, by worker.", labels=["worker", "model"]
        )
        for w in workers:
            worker_up.add_metric([w.name, w.host], 1)
            speed.add_metric([w.name], w.tokens_per_s)
            for state, value in (
                ("busy", w.slots_busy),
                ("total", w.slots_total),
                ("waiting", w.slots_waiting),
            ):
                slots.add_metric([w.name, state], value)
            for kind, value in (
                ("resident", w.rss_bytes),
                ("models", w.memory_used_bytes),
                ("budget", w.memory_budget_bytes),
                ("prompt_cache", w.prompt_cache_bytes),
            ):
                memory.add_metric([w.name, kind], value)
            for model in w.models:
                loaded.add_metric([w.name, model], 1)
        yield from (worker_up, speed, slots, memory, loaded)

    def _downloads(self) -> Iterator[GaugeMetricFamily]:
        from models_admin.models import Download

        count = GaugeMetricFamily("wiz_downloads", "Model downloads, by state.", labels=["state"])
        done = GaugeMetricFamily(
            "wiz_download_bytes",
            "Bytes of the downloads queued or running: fetched so far and in all.",
            labels=["file", "kind"],
        )
        by_state: dict[str, int] = dict.fromkeys(Download.State.values, 0)
        for row in Download.objects.values("state").annotate(n=Count("id")):
            by_state[row["state"]] = row["n"]
        for state, n in by_state.items():
            count.add_metric([state], n)
        for download in Download.objects.filter(state__in=Download.ACTIVE):
            done.add_metric([download.filename, "done"], download.bytes_done)
            done.add_metric([download.filename, "total"], download.total_bytes)
        yield from (count, done)


@login_not_required
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not metrics_may_read(request):
        return HttpResponse(FORBIDDEN, status=403, content_type="text/plain; charset=utf-8")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(settings.METRICS_DIR))
    registry.register(LiveStateCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class OpenSocketsGauge:
    """ASGI middleware around the WebSocket routes: counts the sockets accepted and not yet
    closed in this process (wiz_websockets_open)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        # A process that exits leaves its livesum files behind; they must stop counting.
        atexit.register(multiprocess.mark_process_dead, os.getpid(), str(settings.METRICS_DIR))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        gauge = WEBSOCKETS_OPEN.labels(scope.get("path", ""))
        is_open = False

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal is_open
            if message["type"] == "websocket.accept" and not is_open:
                is_open = True
                gauge.inc()
            elif message["type"] == "websocket.close" and is_open:
                is_open = False
                gauge.dec()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if is_open:
                gauge.dec()
