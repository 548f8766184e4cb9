"""Fixtures for the Hub and downloads: a small real GGUF file, the stand-in Hub serving it and
the default model, and a real download worker as a subprocess."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import django_rq
import numpy as np
import pytest
from django.conf import settings
from rq.worker import Worker

from tests.hub_server import FakeHub
from tests.processes import MANAGE, Child, child_env, wait_for
from wizweb.default_model import DEFAULT_MODEL_FILE, default_model_path
from wizweb.redis_server import redis_connection

TINY_REPO = "wiz-test/Tiny-GGUF"
TINY_FILE = "tiny-F32.gguf"
SMOL_REPO = "wiz-test/SmolLM2-135M-Instruct-GGUF"
SMOL_FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"
GATED_REPO = "wiz-test/Gated-GGUF"


def write_tiny_gguf(path: Path, *, megabytes: int = 4) -> Path:
    """A real GGUF file with a llama-shaped header and one tensor of random weights: enough for
    the header reader and the checksum, small enough to move in a moment."""
    import gguf

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("Tiny Test")
    writer.add_context_length(2048)
    writer.add_embedding_length(64)
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    weights = np.random.default_rng(7).standard_normal((megabytes << 20) // 4, dtype=np.float32)
    writer.add_tensor("token_embd.weight", weights)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("hub-files") / TINY_FILE)


@pytest.fixture
def hub(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """The stand-in Hub, with HF_ENDPOINT pointing at it for this process and its children."""
    fake = FakeHub().start()
    fake.add_repo(TINY_REPO, downloads=10)
    fake.add_file(TINY_REPO, TINY_FILE, tiny_gguf)
    fake.add_file(TINY_REPO, "README.md", Path(__file__), lfs=False)
    fake.add_repo(SMOL_REPO, downloads=500)
    fake.add_file(SMOL_REPO, SMOL_FILE, default_model_path(Path(settings.MODELS_DIR)))
    fake.add_repo(GATED_REPO, gated=True)
    fake.add_file(GATED_REPO, "gated-Q8_0.gguf", tiny_gguf)
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield fake
    fake.stop()


@pytest.fixture
def clean_downloads() -> Iterator[None]:
    """Each test starts with an empty downloads queue and no downloaded files."""
    django_rq.get_queue(settings.DOWNLOAD_QUEUE).empty()
    yield
    django_rq.get_queue(settings.DOWNLOAD_QUEUE).empty()
    for owner in ("wiz-test",):
        shutil.rmtree(Path(settings.MODELS_DIR) / owner, ignore_errors=True)


def download_worker_command(name: str) -> list[str]:
    return [
        sys.executable,
        MANAGE,
        "rqworker",
        settings.DOWNLOAD_QUEUE,
        "--name",
        name,
        "--worker-class",
        "models_admin.download_worker.DownloadWorker",
    ]


def start_download_worker(prefix: str, log_dir: Path) -> Child:
    # A fresh name each time: a killed worker's record lingers in rq for minutes.
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    child = Child(name, download_worker_command(name), child_env(), log_dir)

    def registered() -> bool:
        if child.process.poll() is not None:
            raise RuntimeError(f"The download worker exited:\n{child.output()}")
        return any(w.name == name for w in Worker.all(connection=redis_connection()))

    wait_for(registered, timeout=60, what=f"the download worker {name} to register")
    return child


@pytest.fixture
def download_worker(hub: FakeHub, clean_downloads: None, log_dir: Path) -> Iterator[Child]:
    child = start_download_worker("test-downloads", log_dir)
    yield child
    child.stop()


def default_model_size() -> int:
    return (Path(settings.MODELS_DIR) / DEFAULT_MODEL_FILE).stat().st_size
