"""Benchmark: a Hub download through Wiz Web against a plain copy over HTTP, a cancel's delay,
and what a resume fetches.

    .venv/bin/python bench/downloads.py [--runs 3] [--throttle-mb 8]

The Hub is the tests' stand-in (tests/hub_server.py) on 127.0.0.1 serving the default model
(98 MB), so the figures show our overhead, not a network. Printed, best of `--runs`:
- a plain streamed GET into a file (urllib), the floor;
- huggingface_hub's own `hf_hub_download` into a folder;
- Wiz Web's `download_run` (huggingface_hub's `http_get` on our partial file, progress events),
  its transfer alone and with the sha256 check and the GGUF header read that follow;
- with the Hub throttled: the time from a cancel to the end of the transfer, and the bytes the
  Hub sent after it; then what the resume fetched against the file's size.
Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from environment import bench_django  # noqa: E402

REPO, FILE = "bench/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct-Q4_1.gguf"
MB = 1 << 20


def rate(seconds: float, size: int) -> str:
    return f"{seconds:6.2f} s  {size / MB / seconds:7.1f} MB/s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--throttle-mb", type=float, default=8.0)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="wiz-bench-dl-"))
    models_dir = data_dir / "models"
    models_dir.mkdir()
    redis, source = bench_django(data_dir, models_dir)
    try:
        run(args.runs, args.throttle_mb, data_dir, source)
    finally:
        redis.stop()  # type: ignore[attr-defined]
        shutil.rmtree(data_dir, ignore_errors=True)


def run(runs: int, throttle_mb: float, data_dir: Path, source: Path) -> None:
    import logging

    from huggingface_hub import hf_hub_download

    from models_admin.download_events import DownloadEvents
    from models_admin.downloads import download_cancel, download_run, download_start
    from models_admin.models import Download, LocalModel
    from tests.hub_server import FakeHub
    from wizweb.channels_sender import channel_sender
    from wizweb.redis_server import redis_connection

    logging.getLogger("httpx2").setLevel(logging.WARNING)
    hub = FakeHub().start()
    hub.add_repo(REPO)
    hub.add_file(REPO, FILE, source)
    os.environ["HF_ENDPOINT"] = hub.url
    size = source.stat().st_size
    url = f"{hub.url}/{REPO}/resolve/main/{FILE}"
    models_dir = data_dir / "models"

    def plain() -> float:
        started = time.perf_counter()
        with urllib.request.urlopen(url) as response, (data_dir / "plain").open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
        return time.perf_counter() - started

    def library() -> float:
        folder = data_dir / "hf"
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        hf_hub_download(REPO, FILE, local_dir=folder, endpoint=hub.url)
        return time.perf_counter() - started

    def ours() -> tuple[float, float]:
        Download.objects.all().delete()
        LocalModel.objects.all().delete()
        shutil.rmtree(models_dir / "bench", ignore_errors=True)
        download, _ = download_start(repo_id=REPO, filename=FILE, enqueue=False)
        moved: list[float] = []
        started = time.perf_counter()
        done = download_run(
            download_id=download.pk,
            job_id=download.job_id,
            events=DownloadEvents(channel_sender),
            connection=redis_connection(),
            on_progress=lambda p: moved.append(time.perf_counter()) if p.bytes == size else None,
        )
        total = time.perf_counter() - started
        assert done.state == "done", done.error
        return moved[0] - started, total

    print(f"File: {FILE}, {size / MB:.1f} MB, from a local stand-in Hub; best of {runs}.")
    print(f"  plain GET into a file       {rate(min(plain() for _ in range(runs)), size)}")
    print(f"  hf_hub_download             {rate(min(library() for _ in range(runs)), size)}")
    timings = [ours() for _ in range(runs)]
    print(f"  Wiz Web transfer            {rate(min(t for t, _ in timings), size)}")
    print(f"  Wiz Web with verify+register{rate(min(t for _, t in timings), size)}")

    Download.objects.all().delete()
    LocalModel.objects.all().delete()
    shutil.rmtree(models_dir / "bench", ignore_errors=True)
    hub.throttle_bytes_per_s = int(throttle_mb * MB)
    download, _ = download_start(repo_id=REPO, filename=FILE, enqueue=False)
    marks: dict[str, float] = {}

    baseline = hub.served_bytes(REPO, FILE)

    def cancel_midway() -> None:
        while hub.served_bytes(REPO, FILE) - baseline < size // 3:
            time.sleep(0.01)
        marks["served"] = hub.served_bytes(REPO, FILE)
        marks["at"] = time.perf_counter()
        download_cancel(download=Download.objects.get(pk=download.pk))

    threading.Thread(target=cancel_midway, daemon=True).start()
    cancelled = download_run(
        download_id=download.pk,
        job_id=download.job_id,
        events=DownloadEvents(channel_sender),
        connection=redis_connection(),
    )
    stopped = time.perf_counter() - marks["at"]
    time.sleep(1)
    after = hub.served_bytes(REPO, FILE) - marks["served"]
    kept = cancelled.part_path.stat().st_size
    print(
        f"Cancel at {throttle_mb:g} MB/s: transfer ended {stopped * 1000:.0f} ms after it, "
        f"{after / MB:.2f} MB more left the Hub; {kept / MB:.1f} MB kept ({cancelled.state})."
    )
    hub.throttle_bytes_per_s = 0
    before = hub.served_bytes(REPO, FILE)
    again, _ = download_start(repo_id=REPO, filename=FILE, enqueue=False)
    resumed = download_run(
        download_id=again.pk,
        job_id=again.job_id,
        events=DownloadEvents(channel_sender),
        connection=redis_connection(),
    )
    fetched = hub.served_bytes(REPO, FILE) - before
    print(
        f"Resume: fetched {fetched / MB:.1f} MB of {size / MB:.1f} MB "
        f"(from {resumed.resumed_from_bytes / MB:.1f} MB on disk), {resumed.state}."
    )
    hub.stop()


if __name__ == "__main__":
    main()
