"""Benchmark: many chats at once through Wiz Web, a peer server and raw llama-cpp-python.

    .venv/bin/python bench/concurrency.py [--concurrency 1,2,4,8,16] [--max-tokens 128]
        [--requests N] [--sides wiz,peer,raw] [--peer http://HOST:PORT | --llama-server PATH]
        [--quick]

The yardstick for continuous batching (issue 12), taken in one sitting so that only ratios
matter (see PERFORMANCE.md). Three sides answer the same prompts with the default model,
temperature 0, seed 42, repeat penalty 1 and the same number of llama.cpp threads. All three
are started first; then each level, and each scenario, runs on one side after the other, so
they never share the cores and a change in the box's background load falls on every side
rather than on whichever would have run last:

- **wiz**: `/v1/chat/completions`, streamed with `stream_options.include_usage`, through daphne
  and one inference worker on a private Redis and a throw-away SQLite database.
- **peer**: any OpenAI-compatible server at `--peer URL`, or llama.cpp's llama-server started
  here from `--llama-server PATH` on a free port as `-t 2 -c 16384 --parallel 8` (the way
  PERFORMANCE.md says to build and run it). Its slots then hold 2,048 tokens each, which is why
  the long prompt below stays just under 2,000. Skipped when neither option is given.
- **engine**: Wiz's own batched engine in this process, loaded as the worker loads the model
  (`inference.runtime`), with no web side, queue or Redis: the ceiling of what the worker's
  scheduler can do on the box, to tell the cost of the web side from that of the engine. Not
  in the default sides.
- **raw**: `llama_cpp.Llama` in this process with the model's own load options, one request
  at a time: only the C=1 level, as a ceiling for one stream.

For each C in `--concurrency`, `--requests` chats (default 2 x C) run with at most C in flight,
each with its own API key and user (as C people on a LAN would be, so neither the per-user
pending limit nor a per-owner share of the batch slows them), a distinct "Write a short story"
prompt and up to `--max-tokens` new tokens. Printed per level: aggregate completion tokens/s
(every completion token over the level's wall time), the median stream's tokens/s (after its
first token, as bench/stream.py counts), time to first token p50 and p95 from each request's
start, and p99 of the gaps between consecutive content chunks of a stream. Wiz coalesces text
into a chunk every 40 ms (`WIZ_CHUNK_INTERVAL`, longer with many streams), so its gaps do not
go below that; completion tokens come from the usage chunk, or count the content chunks where
there is none (raw).

Then, on wiz and peer:

- **follow-up**: turn 1 of a conversation, 20 other conversations at C=4, then turn 2 of the
  first (its messages carry turn 1's answer). Turn 2's time to first token shows whether the
  server still had turn 1 evaluated.
- **long prompt**: 7 streamed chats of up to 256 tokens; once all 7 stream (or after 10 s,
  for a server that answers one at a time), one chat whose message is about 2,000 tokens of
  numbered lines, asking for 8 tokens. Printed: how many of the 7 were streaming when it was
  sent, its time to first token, and the max and p99 gap of the 7 during its prefill (from its
  send to its first token).

Last, the ratios: wiz/peer aggregate tokens/s and TTFT p95 at C=8 (or the largest C both ran),
wiz C=1 tokens/s against raw, wiz/peer follow-up TTFT and max gap during the long prompt.
`--quick` shrinks the scenarios (4 other conversations, a 500-token prompt, chats of 64 tokens)
for a smoke run. Progress goes to stderr, the report to stdout. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from environment import SHARED_MODELS_DIR, bench_django  # noqa: E402

TOPICS = [
    "a lighthouse keeper",
    "a lost robot",
    "a baker at dawn",
    "a city under snow",
    "a dragon who cannot fly",
    "a clockmaker's apprentice",
    "a ship in a bottle",
    "the last library",
    "a fox and a crow",
    "a train that never stops",
    "an astronaut's garden",
    "a village of painters",
    "a river that talks",
    "a forgotten key",
    "a market on the moon",
    "a chess match in the rain",
]
FIRST_TURN = "Write a short story about a lighthouse keeper and a storm."
FOLLOW_UP = "What happens next?"
SEED = 42
LONG_CHATS = 7
# Until all the chats stream; a server that answers one at a time never has them all streaming.
STREAMING_WAIT_S = 10.0
HTTP_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Plan:
    concurrency: list[int]
    max_tokens: int
    requests: int | None
    other_conversations: int
    long_prompt_tokens: int
    long_chat_tokens: int

    def requests_at(self, concurrency: int) -> int:
        return max(self.requests, concurrency) if self.requests else 2 * concurrency

    @property
    def users(self) -> int:
        # One API key per chat in flight: the largest level, or the long-prompt scenario's 8.
        return max(*self.concurrency, LONG_CHATS + 1)


def level_prompts(concurrency: int, count: int) -> list[str]:
    # The same prompts on every side; a different one per request and per level, so no
    # request finds its whole prompt already evaluated.
    return [
        f"Write a short story about {TOPICS[i % len(TOPICS)]} (story {concurrency}.{i + 1})."
        for i in range(count)
    ]


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


@dataclass
class Stream:
    """One streamed answer as the client saw it, in perf_counter seconds."""

    started: float = 0.0
    arrivals: list[float] = field(default_factory=list)  # one per non-empty content chunk
    ended: float = 0.0
    usage_tokens: int | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None  # leading prompt tokens the server did not evaluate again
    text: str = ""

    @property
    def tokens(self) -> int:
        return self.usage_tokens if self.usage_tokens is not None else len(self.arrivals)

    @property
    def first(self) -> float:
        return self.arrivals[0] if self.arrivals else self.ended

    @property
    def ttft_ms(self) -> float:
        return (self.first - self.started) * 1000

    @property
    def tokens_per_s(self) -> float | None:
        if self.tokens < 2 or len(self.arrivals) < 2:
            return None
        return (self.tokens - 1) / (self.arrivals[-1] - self.arrivals[0])

    def gaps(self, after: float = -math.inf, before: float = math.inf) -> list[float]:
        """Gaps in ms between consecutive chunks, keeping those that overlap (after, before)."""
        pairs = zip(self.arrivals, self.arrivals[1:], strict=False)
        return [(b - a) * 1000 for a, b in pairs if b > after and a < before]


def percentile(values: list[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Level:
    side: str
    concurrency: int
    streams: list[Stream]
    wall_s: float
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds by process

    @property
    def cpu_per_1k_tokens(self) -> dict[str, float]:
        tokens = sum(s.tokens for s in self.streams) or 1
        return {name: seconds * 1000 / tokens for name, seconds in self.cpu_s.items()}

    @property
    def aggregate_tokens_per_s(self) -> float:
        return sum(s.tokens for s in self.streams) / self.wall_s

    @property
    def stream_tokens_per_s(self) -> float | None:
        rates = [r for s in self.streams if (r := s.tokens_per_s) is not None]
        return statistics.median(rates) if rates else None

    def ttft_ms(self, p: float) -> float | None:
        return percentile([s.ttft_ms for s in self.streams], p)

    @property
    def gap_p99_ms(self) -> float | None:
        return percentile([g for s in self.streams for g in s.gaps()], 99)


@dataclass
class LongPrompt:
    streaming_at_send: int
    long: Stream
    gaps_ms: list[float]


@dataclass
class SideResult:
    name: str
    levels: dict[int, Level] = field(default_factory=dict)
    turns: tuple[Stream, Stream] | None = None
    long_prompt: LongPrompt | None = None


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the sides


class Side(Protocol):
    """What the levels and scenarios need of a side. One that is not `concurrent` answers one
    request at a time, so it runs only the C=1 level and no scenarios."""

    @property
    def name(self) -> str: ...

    @property
    def concurrent(self) -> bool: ...

    @property
    def processes(self) -> dict[str, int]: ...

    async def chat(
        self,
        client: httpx2.AsyncClient,
        slot: int,
        messages: list[dict[str, str]],
        max_tokens: int,
        into: Stream | None = None,
    ) -> Stream: ...


@dataclass(frozen=True)
class HttpSide:
    """A server speaking OpenAI's streamed chat completions."""

    concurrent = True
    name: str
    base_url: str
    model: str
    keys: list[str]  # one per chat in flight; empty for a server that wants none
    processes: dict[str, int] = field(default_factory=dict)  # its processes' pids, by role

    async def chat(
        self,
        client: httpx2.AsyncClient,
        slot: int,
        messages: list[dict[str, str]],
        max_tokens: int,
        into: Stream | None = None,
    ) -> Stream:
        """One streamed chat completion, recorded into `into` as it arrives (so a caller can
        watch it) and returned."""
        stream = into if into is not None else Stream()
        body = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens,
            "temperature": 0,
            "seed": SEED,
            "repeat_penalty": 1.0,  # llama-server's default; Wiz's is 1.1
        }
        headers = {"Authorization": f"Bearer {self.keys[slot]}"} if self.keys else {}
        stream.started = time.perf_counter()
        async with client.stream(
            "POST", f"{self.base_url}/v1/chat/completions", json=body, headers=headers
        ) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:500]
                raise RuntimeError(f"{self.name} answered {response.status_code}: {text}")
            async for line in response.aiter_lines():
                now = time.perf_counter()
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    break
                payload = json.loads(data)
                if "error" in payload:
                    raise RuntimeError(f"{self.name} failed mid-stream: {payload['error']}")
                if usage := payload.get("usage"):
                    stream.usage_tokens = usage["completion_tokens"]
                    stream.prompt_tokens = usage["prompt_tokens"]
                    stream.cached_tokens = (usage.get("prompt_tokens_details") or {}).get(
                        "cached_tokens"
                    )
                for choice in payload.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        stream.arrivals.append(now)
                        stream.text += content
        stream.ended = time.perf_counter()
        return stream


@contextlib.contextmanager
def wiz_side(data_dir: Path, plan: Plan) -> Iterator[HttpSide]:
    """daphne and one inference worker on the bench data dir, with one user and key per chat
    in flight."""
    from django.contrib.auth import get_user_model

    from models_admin.local_models import localmodel_register_default
    from tests.processes import (
        Child,
        child_env,
        daphne_command,
        free_port,
        http_status,
        inference_worker_command,
        wait_for,
    )
    from wizweb.apikeys import apikey_create

    model = localmodel_register_default()
    users = get_user_model().objects
    keys = [
        apikey_create(user=users.create_user(f"bench-{n}"), name="bench").secret
        for n in range(plan.users)
    ]
    port = free_port()
    env = child_env()
    worker = Child("worker", inference_worker_command(name="bench"), env, data_dir)
    web = Child("daphne", daphne_command(port), env, data_dir)
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/healthz"), timeout=60, what="daphne")
        processes = {"worker": worker.pid, "daphne": web.pid, "redis": redis_pid()}
        yield HttpSide("wiz", f"http://127.0.0.1:{port}", model.name, keys, processes)
    finally:
        web.stop()
        worker.stop()


@contextlib.contextmanager
def peer_side(
    data_dir: Path, model_path: Path, *, url: str | None, llama_server: str | None
) -> Iterator[HttpSide]:
    """The server at `url`, or the llama-server binary started for the duration."""
    from tests.processes import Child, free_port, http_status, wait_for

    server = None
    base_url = (url or "").rstrip("/")
    if llama_server:
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        command = [llama_server, "-m", str(model_path), "--host", "127.0.0.1"]
        command += ["--port", str(port), "-t", "2", "-c", "16384", "--parallel", "8"]
        server = Child("llama-server", command, dict(os.environ), data_dir)
    try:
        if server is not None:
            wait_for(
                lambda: http_status(f"{base_url}/health") == 200,
                timeout=120,
                what=f"llama-server (its log: {server.log_path})",
            )
        models = httpx2.get(f"{base_url}/v1/models", timeout=10).json()
        processes = {"llama-server": server.pid} if server is not None else {}
        yield HttpSide("peer", base_url, models["data"][0]["id"], [], processes)
    finally:
        if server is not None:
            server.stop()


class InProcessSide:
    """A side answering in this process, each answer in a thread of the side's own (asyncio's
    default pool has too few threads for the answers a concurrent side keeps in flight).
    Subclasses say how one answer is written into its stream."""

    name = ""
    concurrent = False
    processes: dict[str, int] = {}  # it runs in this process: counted as the client

    def __init__(self) -> None:
        self.threads = concurrent.futures.ThreadPoolExecutor(max_workers=64)

    async def chat(
        self,
        client: httpx2.AsyncClient,  # unused: no HTTP here
        slot: int,
        messages: list[dict[str, str]],
        max_tokens: int,
        into: Stream | None = None,
    ) -> Stream:
        stream = into if into is not None else Stream()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.threads, self._timed, slot, messages, max_tokens, stream
        )

    def _timed(
        self, slot: int, messages: list[dict[str, str]], max_tokens: int, stream: Stream
    ) -> Stream:
        stream.started = time.perf_counter()
        self._answer(slot, messages, max_tokens, stream)
        stream.ended = time.perf_counter()
        return stream

    def _answer(
        self, slot: int, messages: list[dict[str, str]], max_tokens: int, stream: Stream
    ) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.threads.shutdown()


class RawSide(InProcessSide):
    """llama-cpp-python in this process: a `Llama` holds one sequence, so one answer at a time."""

    name = "raw"

    def __init__(self, llama: Any) -> None:
        super().__init__()
        self.llama = llama

    def _answer(
        self, slot: int, messages: list[dict[str, str]], max_tokens: int, stream: Stream
    ) -> None:
        for chunk in self.llama.create_chat_completion(
            messages=messages,
            stream=True,
            max_tokens=max_tokens,
            temperature=0,
            seed=SEED,
            repeat_penalty=1.0,
        ):
            if content := chunk["choices"][0]["delta"].get("content"):
                stream.arrivals.append(time.perf_counter())
                stream.text += content


class EngineSide(InProcessSide):
    """The worker's batched engine driven in this process, one thread per answer."""

    name = "engine"
    concurrent = True

    def __init__(self, engine: Any) -> None:
        super().__init__()
        self.engine = engine

    def _answer(
        self, slot: int, messages: list[dict[str, str]], max_tokens: int, stream: Stream
    ) -> None:
        from inference.requests import Finished, GenerationRequest, TextDelta
        from inference.sampling import Sampling

        sampling = Sampling(temperature=0, seed=SEED, repeat_penalty=1.0, max_tokens=max_tokens)
        request = GenerationRequest(messages=messages, sampling=sampling)
        for event in self.engine.submit(request, owner=f"bench-{slot}").events():
            if isinstance(event, TextDelta) and event.channel == "content" and event.text:
                stream.arrivals.append(time.perf_counter())
                stream.text += event.text
            elif isinstance(event, Finished):
                stream.usage_tokens = event.completion_tokens
                stream.prompt_tokens = event.prompt_tokens
                stream.cached_tokens = event.cached_tokens


@contextlib.contextmanager
def engine_side() -> Iterator[EngineSide]:
    """The default model loaded by a runtime of this process, as the worker's runtime loads it."""
    from inference.runtime import ModelRuntime
    from models_admin.loading import model_spec
    from models_admin.local_models import localmodel_register_default

    runtime = ModelRuntime()
    spec = model_spec(localmodel_register_default())
    with runtime.lease(spec) as engine:
        side = EngineSide(engine)
        try:
            yield side
        finally:
            side.close()
    runtime.unload(spec.key)


@contextlib.contextmanager
def raw_side() -> Iterator[RawSide]:
    """The default model loaded here with its own load options, as the worker loads it."""
    import llama_cpp

    from models_admin.loading import load_options_for
    from models_admin.local_models import localmodel_register_default

    model = localmodel_register_default()
    options = load_options_for(model)
    llama = llama_cpp.Llama(
        model_path=str(model.path),
        n_ctx=options.n_ctx,
        n_threads=options.n_threads,
        n_batch=options.n_batch,
        verbose=False,
    )
    side = RawSide(llama)
    try:
        yield side
    finally:
        side.close()
        llama.close()


# ---------------------------------------------------------------- the measurements


async def level_run(
    side: Side,
    client: httpx2.AsyncClient,
    concurrency: int,
    prompts: list[str],
    max_tokens: int,
) -> Level:
    """Every prompt, with at most `concurrency` in flight: the first ones start together, and
    each slot takes the next prompt as soon as its answer ends."""
    waiting = iter(prompts)
    streams: list[Stream] = []

    async def slot(index: int) -> None:
        for prompt in waiting:
            streams.append(await side.chat(client, index, [user(prompt)], max_tokens))

    before = cpu_seconds(side.processes)
    started = time.perf_counter()
    await asyncio.gather(*(slot(index) for index in range(concurrency)))
    wall_s = time.perf_counter() - started
    after = cpu_seconds(side.processes)
    cpu_s = {name: after[name] - before.get(name, 0.0) for name in after}
    return Level(side.name, concurrency, streams, wall_s, cpu_s)


def cpu_seconds(processes: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each process has used so far; `client` is this one."""
    import psutil

    used: dict[str, float] = {}
    for name, pid in {**processes, "client": os.getpid()}.items():
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            used[name] = times.user + times.system
    return used


def redis_pid() -> int:
    """The pid of the Redis that Django's settings point at (the bench's private one)."""
    from wizweb.redis_server import redis_connection

    return int(redis_connection().info("server")["process_id"])


async def follow_up_run(
    side: Side, client: httpx2.AsyncClient, plan: Plan
) -> tuple[Stream, Stream]:
    turn1 = await side.chat(client, 0, [user(FIRST_TURN)], plan.max_tokens)
    others = [
        f"Write a short story about {TOPICS[i % len(TOPICS)]} (other conversation {i + 1})."
        for i in range(plan.other_conversations)
    ]
    await level_run(side, client, 4, others, plan.max_tokens)
    messages = [user(FIRST_TURN), {"role": "assistant", "content": turn1.text}, user(FOLLOW_UP)]
    turn2 = await side.chat(client, 0, messages, plan.max_tokens)
    return turn1, turn2


async def long_prompt_run(
    side: Side, client: httpx2.AsyncClient, plan: Plan, long_message: str
) -> LongPrompt:
    chats = [Stream() for _ in range(LONG_CHATS)]
    tasks = [
        asyncio.create_task(
            side.chat(
                client,
                index,
                [user(f"Write a long story about {TOPICS[index]} (long-prompt scenario).")],
                plan.long_chat_tokens,
                into=chats[index],
            )
        )
        for index in range(LONG_CHATS)
    ]
    deadline = time.perf_counter() + STREAMING_WAIT_S
    while not all(c.arrivals for c in chats) and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    streaming = sum(1 for c in chats if c.arrivals and not c.ended)
    long = await side.chat(client, LONG_CHATS, [user(long_message)], 8)
    await asyncio.gather(*tasks)
    gaps = [g for c in chats for g in c.gaps(after=long.started, before=long.first)]
    return LongPrompt(streaming, long, gaps)


async def measure(sides: list[Side], plan: Plan, long_message: str) -> dict[str, SideResult]:
    """Each level on every side in turn, then each scenario on every server in turn."""
    results = {side.name: SideResult(side.name) for side in sides}
    servers = [side for side in sides if side.concurrent]
    timeout = httpx2.Timeout(HTTP_TIMEOUT_S, connect=10.0)
    async with httpx2.AsyncClient(timeout=timeout) as client:
        for side in sides:
            await side.chat(client, 0, [user("Hello")], 8)  # loads the model, warms the caches
        for concurrency in plan.concurrency:
            prompts = level_prompts(concurrency, plan.requests_at(concurrency))
            for side in sides if concurrency == 1 else servers:
                level = await level_run(side, client, concurrency, prompts, plan.max_tokens)
                results[side.name].levels[concurrency] = level
                progress(f"{side.name}: C={concurrency} took {level.wall_s:.1f} s")
        if ARGS.levels_only:
            return results
        for side in servers:
            results[side.name].turns = await follow_up_run(side, client, plan)
            progress(f"{side.name}: follow-up done")
        for side in servers:
            scenario = await long_prompt_run(side, client, plan, long_message)
            results[side.name].long_prompt = scenario
            progress(f"{side.name}: long prompt done")
    return results


def long_message_build(model_path: Path, tokens: int) -> str:
    """Numbered lines and a question, about `tokens` tokens long in the model's tokenizer."""
    import llama_cpp

    vocab = llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    head = "Here are some numbered lines.\n"
    tail = "Which number does the last line have? Answer with the number only."
    used = len(vocab.tokenize((head + tail).encode(), add_bos=False))
    lines: list[str] = []
    while True:
        line = f"Line {len(lines) + 1}: the quick brown fox jumps over the lazy dog.\n"
        used += len(vocab.tokenize(line.encode(), add_bos=False))
        if used > tokens:
            break
        lines.append(line)
    vocab.close()
    return head + "".join(lines) + tail


# ---------------------------------------------------------------- the report


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f} x"


def machine_print() -> None:
    import llama_cpp

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{n:.2f}" for n in os.getloadavg())
    print(f"date {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}   {platform.machine()}")
    print(f"cpu  {cpu}, {os.cpu_count()} cores, load average {load} at start")
    print(f"llama-cpp-python {llama_cpp.__version__}")


def report(results: dict[str, SideResult], plan: Plan) -> None:
    print(
        f"\nmax_tokens {plan.max_tokens}, temperature 0, seed {SEED}, repeat penalty 1;"
        " times in ms, rates in completion tokens/s"
    )
    print(
        f"{'side':<6} {'C':>3} {'reqs':>4} {'wall s':>7} {'aggregate':>9} {'per stream':>10}"
        f" {'ttft p50':>9} {'ttft p95':>9} {'gap p99':>8}"
    )
    for concurrency in plan.concurrency:
        for result in results.values():
            level = result.levels.get(concurrency)
            if level is None:
                continue
            print(
                f"{level.side:<6} {concurrency:>3} {len(level.streams):>4} {level.wall_s:>7.1f}"
                f" {level.aggregate_tokens_per_s:>9.1f} {rate(level.stream_tokens_per_s):>10}"
                f" {ms(level.ttft_ms(50)):>9} {ms(level.ttft_ms(95)):>9}"
                f" {ms(level.gap_p99_ms):>8}"
            )

    print("\nCPU seconds per 1,000 completion tokens, by process (client: this bench)")
    for concurrency in plan.concurrency:
        for result in results.values():
            level = result.levels.get(concurrency)
            if level is None or not level.cpu_s:
                continue
            shares = level.cpu_per_1k_tokens
            parts = ", ".join(f"{name} {value:.2f}" for name, value in shares.items())
            print(f"{level.side:<6} {concurrency:>3} total {sum(shares.values()):.2f}: {parts}")

    print(f"\nfollow-up: turn 2 after {plan.other_conversations} other conversations at C=4")
    for result in results.values():
        if result.turns is not None:
            turn1, turn2 = result.turns
            print(
                f"{result.name:<6} turn 1 ttft {ms(turn1.ttft_ms)} ms ({turn1.prompt_tokens}"
                f" prompt tokens), turn 2 ttft {ms(turn2.ttft_ms)} ms"
                f" ({turn2.prompt_tokens} prompt tokens, {turn2.cached_tokens} cached)"
            )

    print(f"\nlong prompt: {LONG_CHATS} chats of up to {plan.long_chat_tokens} tokens, then one")
    for result in results.values():
        if (scenario := result.long_prompt) is not None:
            print(
                f"{result.name:<6} {scenario.streaming_at_send} of {LONG_CHATS} streaming at send;"
                f" long prompt ({scenario.long.prompt_tokens} tokens) ttft"
                f" {ms(scenario.long.ttft_ms)} ms; during its prefill {len(scenario.gaps_ms)}"
                f" gaps, max {ms(max(scenario.gaps_ms, default=None))} ms,"
                f" p99 {ms(percentile(scenario.gaps_ms, 99))} ms"
            )

    ratios_print(results, plan)


def ratios_print(results: dict[str, SideResult], plan: Plan) -> None:
    wiz, peer, raw, engine = (
        results.get(name) or SideResult(name) for name in ("wiz", "peer", "raw", "engine")
    )
    both = [c for c in plan.concurrency if c in wiz.levels and c in peer.levels]
    at = 8 if 8 in both else max(both, default=0)

    def aggregate(result: SideResult) -> float | None:
        level = result.levels.get(at)
        return level.aggregate_tokens_per_s if level else None

    def ttft_p95(result: SideResult) -> float | None:
        level = result.levels.get(at)
        return level.ttft_ms(95) if level else None

    def single(result: SideResult) -> float | None:
        level = result.levels.get(1)
        return level.stream_tokens_per_s if level else None

    def turn2(result: SideResult) -> float | None:
        return result.turns[1].ttft_ms if result.turns else None

    def max_gap(result: SideResult) -> float | None:
        return max(result.long_prompt.gaps_ms, default=None) if result.long_prompt else None

    rows = [
        (f"aggregate tokens/s at C={at}, wiz / peer", aggregate(wiz), aggregate(peer), rate),
        (f"aggregate tokens/s at C={at}, engine / peer", aggregate(engine), aggregate(peer), rate),
        ("C=1 stream tokens/s, wiz / raw", single(wiz), single(raw), rate),
        (f"ttft p95 at C={at}, wiz / peer", ttft_p95(wiz), ttft_p95(peer), ms),
        ("follow-up turn 2 ttft, wiz / peer", turn2(wiz), turn2(peer), ms),
        ("max gap during the long prompt, wiz / peer", max_gap(wiz), max_gap(peer), ms),
    ]
    print("\nratios")
    for label, a, b, shown in rows:
        print(f"{label:<44} {ratio(a, b):>9}   ({shown(a)} / {shown(b)})")


def main() -> None:
    plan = Plan(
        concurrency=ARGS.concurrency,
        max_tokens=ARGS.max_tokens,
        requests=ARGS.requests,
        other_conversations=4 if ARGS.quick else 20,
        long_prompt_tokens=500 if ARGS.quick else 1950,
        long_chat_tokens=64 if ARGS.quick else 256,
    )
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per request otherwise
    machine_print()
    with tempfile.TemporaryDirectory(prefix="wiz-bench-") as tmp, contextlib.ExitStack() as stack:
        data_dir = Path(tmp)
        redis, model_path = bench_django(data_dir, SHARED_MODELS_DIR)
        stack.callback(redis.stop)  # type: ignore[attr-defined]
        long_message = long_message_build(model_path, plan.long_prompt_tokens)
        sides: list[Side] = []
        if "raw" in ARGS.sides:
            sides.append(stack.enter_context(raw_side()))
        if "wiz" in ARGS.sides:
            sides.append(stack.enter_context(wiz_side(data_dir, plan)))
        if "engine" in ARGS.sides:
            sides.append(stack.enter_context(engine_side()))
        if "peer" in ARGS.sides and (ARGS.peer or ARGS.llama_server):
            peer = stack.enter_context(
                peer_side(data_dir, model_path, url=ARGS.peer, llama_server=ARGS.llama_server)
            )
            print(f"peer {peer.base_url} ({peer.model})")
            sides.append(peer)
        elif "peer" in ARGS.sides:
            print("peer not measured: give --peer URL or --llama-server PATH")
        results = asyncio.run(measure(sides, plan, long_message))
    report(results, plan)


def concurrency_list(text: str) -> list[int]:
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("give whole numbers of 1 or more, such as 1,2,4,8")
    return levels


def sides_list(text: str) -> list[str]:
    sides = [part.strip() for part in text.split(",") if part.strip()]
    unknown = set(sides) - {"wiz", "peer", "raw", "engine"}
    if unknown or not sides:
        raise argparse.ArgumentTypeError("choose among wiz, peer, raw and engine, such as wiz,peer")
    return sides


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=concurrency_list, default=[1, 2, 4, 8, 16])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--requests", type=int, help="chats per level (default 2 x C, at least C)")
    parser.add_argument("--sides", type=sides_list, default=["wiz", "peer", "raw"])
    peer = parser.add_mutually_exclusive_group()
    peer.add_argument("--peer", help="an OpenAI-compatible server, such as http://127.0.0.1:8080")
    peer.add_argument("--llama-server", help="a llama-server binary to start for the peer side")
    parser.add_argument("--quick", action="store_true", help="smaller scenarios, for a smoke run")
    parser.add_argument(
        "--levels-only", action="store_true", help="the levels, without the two scenarios"
    )
    ARGS = parser.parse_args()
    main()
