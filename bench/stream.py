"""Benchmark: one answer through raw llama-cpp-python and through the whole product.

    .venv/bin/python bench/stream.py [--runs 3] [--max-tokens 128]

The product path is WebSocket client → daphne → ChatConsumer → RQ queue → inference worker →
channel layer → back, on a private Redis and a throw-away SQLite database. Both sides load the
default model with the same context size and threads, use the same prompt, seed and sampling,
and are run one after the other so they do not share the cores. Printed: time to first token
and tokens/s for each, their ratios, the same prompt typed into the chat page in Debian's
chromium (which renders markdown on the same cores), and the time to first token of turn 1
against turn 6 of one conversation (which shows the evaluated prefix being reused). Nothing here
is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from environment import SHARED_MODELS_DIR, bench_django  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper and a storm."
FOLLOW_UPS = [
    "Give the keeper a name.",
    "What happens next?",
    "Describe the storm in more detail.",
    "How does the story end?",
    "Summarise the story in two sentences.",
]
SEED = 42


def numbered(run: int) -> str:
    # A different start each run, so neither side can reuse the previous run's whole prompt.
    return f"Story number {run + 1}. {PROMPT}"


def raw_run(max_tokens: int, runs: int) -> dict[str, float]:
    import llama_cpp

    from models_admin.loading import load_options_for
    from models_admin.local_models import localmodel_register_default
    from models_admin.models import LocalModel

    model: LocalModel = localmodel_register_default()
    options = load_options_for(model)
    llama = llama_cpp.Llama(
        model_path=str(model.path),
        n_ctx=options.n_ctx,
        n_threads=options.n_threads,
        n_batch=options.n_batch,
        verbose=False,
    )
    ttfts, rates = [], []
    for run in range(runs):
        started = time.perf_counter()
        first = None
        tokens = 0
        for chunk in llama.create_chat_completion(
            messages=[{"role": "user", "content": numbered(run)}],
            stream=True,
            max_tokens=max_tokens,
            seed=SEED,
            temperature=0.7,
            top_p=0.95,
            top_k=40,
            min_p=0.05,
            repeat_penalty=1.1,
        ):
            if chunk["choices"][0]["delta"].get("content"):
                tokens += 1
                if first is None:
                    first = time.perf_counter()
        ended = time.perf_counter()
        assert first is not None
        ttfts.append((first - started) * 1000)
        rates.append((tokens - 1) / (ended - first))
    llama.close()
    return {"ttft_ms": statistics.median(ttfts), "tokens_per_s": statistics.median(rates)}


async def product_answer(ws: object, content: str, conversation: str | None) -> dict:
    options = {"seed": SEED, "temperature": 0.7, "max_tokens": ARGS.max_tokens}
    sent = time.perf_counter()
    await ws.send(
        json.dumps(  # type: ignore[attr-defined]
            {"type": "prompt", "content": content, "conversation": conversation, "options": options}
        )
    )
    first = None
    accepted = None
    while True:
        frame = json.loads(await ws.recv())  # type: ignore[attr-defined]
        if frame["type"] == "accepted":
            accepted = frame
        elif frame["type"] == "chunk" and first is None:
            first = time.perf_counter()
        elif frame["type"] == "done":
            ended = time.perf_counter()
            break
        elif frame["type"] == "error":
            raise RuntimeError(frame)
    assert first is not None and accepted is not None
    tokens = frame["usage"]["completion_tokens"]
    return {
        "conversation": accepted["conversation"],
        "ttft_ms": (first - sent) * 1000,
        "tokens_per_s": (tokens - 1) / (ended - first) if ended > first else 0.0,
        "worker_tokens_per_s": frame["timings"]["tokens_per_s"],
        "prompt_tokens": frame["usage"]["prompt_tokens"],
    }


def product_run(data_dir: Path, runs: int) -> dict[str, object]:
    import websockets
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

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

    localmodel_register_default()
    user = get_user_model().objects.create_user("bench", password="bench-password-1")
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    port = free_port()
    env = child_env()
    worker = Child("worker", inference_worker_command(name="bench"), env, data_dir)
    web = Child("daphne", daphne_command(port), env, data_dir)
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/healthz"), timeout=60, what="daphne")

        async def session() -> dict[str, object]:
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/ws/chat/",
                additional_headers={
                    "Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}",
                    "Origin": f"http://127.0.0.1:{port}",
                },
            ) as ws:
                await product_answer(ws, "Hello", None)  # the worker loads the model
                singles = [await product_answer(ws, numbered(run), None) for run in range(runs)]
                turns = [await product_answer(ws, PROMPT, None)]
                for follow_up in FOLLOW_UPS:
                    turns.append(await product_answer(ws, follow_up, str(turns[0]["conversation"])))
                return {"singles": singles, "turns": turns}

        measured = asyncio.run(session())
        measured["browser"] = browser_answers(f"http://127.0.0.1:{port}", runs)
        return measured
    finally:
        web.stop()
        worker.stop()


def browser_answers(base_url: str, runs: int) -> list[dict[str, float]]:
    """The same kind of prompt typed into the chat page in Debian's chromium: from Enter to the
    first chunk frame the page receives, and tokens/s from there to `done`."""
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        arrivals: list[tuple[float, dict]] = []
        page.on(
            "websocket",
            lambda ws: ws.on(
                "framereceived",
                lambda data: arrivals.append((time.perf_counter(), json.loads(data))),
            ),
        )
        page.goto(f"{base_url}/accounts/login/")
        page.get_by_label("Username").fill("bench")
        page.get_by_label("Password").fill("bench-password-1")
        page.get_by_role("button", name="Log in").click()
        page.wait_for_selector("body[data-connected=true]")
        for run in range(runs):
            page.goto(f"{base_url}/")
            page.wait_for_selector("body[data-connected=true]")
            arrivals.clear()
            box = page.get_by_label("Message")
            box.fill(numbered(runs + run))
            sent = time.perf_counter()
            box.press("Enter")
            page.wait_for_selector('li.message.assistant[data-state="done"]', timeout=120_000)
            first = next(t for t, f in arrivals if f["type"] == "chunk")
            ended, done = next((t, f) for t, f in arrivals if f["type"] == "done")
            tokens = done["usage"]["completion_tokens"]
            results.append(
                {"ttft_ms": (first - sent) * 1000, "tokens_per_s": (tokens - 1) / (ended - first)}
            )
        browser.close()
    return results


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="wiz-bench-") as tmp:
        data_dir = Path(tmp)
        redis, _ = bench_django(data_dir, SHARED_MODELS_DIR)
        try:
            raw = raw_run(ARGS.max_tokens, ARGS.runs)
            product = product_run(data_dir, ARGS.runs)
        finally:
            redis.stop()  # type: ignore[attr-defined]
    singles = product["singles"]
    turns = product["turns"]
    ttft = statistics.median(s["ttft_ms"] for s in singles)  # type: ignore[index]
    rate = statistics.median(s["tokens_per_s"] for s in singles)  # type: ignore[index]
    print(f"prompt: {PROMPT!r}, max_tokens {ARGS.max_tokens}, median of {ARGS.runs} runs")
    print(
        f"raw llama-cpp-python : ttft {raw['ttft_ms']:7.1f} ms   {raw['tokens_per_s']:6.1f} tok/s"
    )
    worker_rate = statistics.median(s["worker_tokens_per_s"] for s in singles)  # type: ignore[index]
    print(
        f"wiz web (ws→worker→ws): ttft {ttft:7.1f} ms   {rate:6.1f} tok/s"
        f"   (the worker's own count: {worker_rate:.1f} tok/s)"
    )
    print(
        f"ratio wiz/raw         : ttft {ttft / raw['ttft_ms']:7.2f} x   "
        f"{rate / raw['tokens_per_s']:6.2f} x tokens/s"
    )
    seen = product["browser"]
    browser_ttft = statistics.median(s["ttft_ms"] for s in seen)  # type: ignore[index]
    browser_rate = statistics.median(s["tokens_per_s"] for s in seen)  # type: ignore[index]
    print(
        f"chat page in chromium : ttft {browser_ttft:7.1f} ms   {browser_rate:6.1f} tok/s"
        f"   (ratio {browser_ttft / raw['ttft_ms']:.2f} x,"
        f" {browser_rate / raw['tokens_per_s']:.2f} x)"
    )
    print(
        f"turn 1 ttft {turns[0]['ttft_ms']:.1f} ms ({turns[0]['prompt_tokens']} prompt tokens), "
        f"turn 6 ttft {turns[-1]['ttft_ms']:.1f} ms ({turns[-1]['prompt_tokens']} prompt tokens), "
        f"ratio {turns[-1]['ttft_ms'] / turns[0]['ttft_ms']:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    ARGS = parser.parse_args()
    main()
