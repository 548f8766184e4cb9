"""The Hub as Wiz Web sees it, through huggingface_hub against the stand-in Hub: search, a
repo's GGUF files, the header from a file's first bytes, and whether each file fits here."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from inference.presence import worker_states
from models_admin.fit import file_fit
from models_admin.gguf_metadata import gguf_read_header_prefix
from models_admin.hub import (
    HEADER_PREFIX_BYTES,
    HubError,
    hub_file_prefix,
    hub_repo,
    hub_search,
    quantization_from_name,
)
from models_admin.loading import model_memory_estimate
from tests.hub_server import FakeHub, sha256_of
from tests.models_admin.conftest import (
    SMOL_FILE,
    SMOL_REPO,
    TINY_FILE,
    TINY_REPO,
    default_model_size,
)
from wizweb.default_model import DEFAULT_MODEL_SHA256
from wizweb.redis_server import redis_connection


def test_it_searches_repos_with_gguf_files_most_downloaded_first(hub: FakeHub) -> None:
    found = hub_search(query="wiz-test")
    assert [m.repo_id for m in found] == [SMOL_REPO, TINY_REPO, "wiz-test/Gated-GGUF"]
    assert found[0].downloads == 500
    assert found[2].gated
    assert [m.repo_id for m in hub_search(query="tiny")] == [TINY_REPO]
    assert hub_search(query="no such thing") == []
    search = next(r for r in hub.requests if r.startswith("GET /api/models?"))
    assert "search=wiz-test" in search and "filter=gguf" in search and "limit=30" in search


def test_it_lists_a_repos_gguf_files_with_sizes_sha256_and_quantisation(
    hub: FakeHub, tiny_gguf: Path
) -> None:
    repo = hub_repo(repo_id=SMOL_REPO)
    assert repo.commit == hub.repos[SMOL_REPO].commit
    assert [f.path for f in repo.files] == [SMOL_FILE]
    smol = repo.files[0]
    assert smol.sha256 == DEFAULT_MODEL_SHA256
    assert smol.size == default_model_size()
    assert smol.quantization == "Q4_1"
    tiny = hub_repo(repo_id=TINY_REPO).files
    assert [f.path for f in tiny] == [TINY_FILE]  # README.md is not a model
    assert tiny[0].sha256 == sha256_of(tiny_gguf)


@pytest.mark.parametrize(
    ("name", "quantization"),
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-0.5b-instruct-iq3_xs.gguf", "IQ3_XS"),
        ("phi-3-mini.F16.gguf", "F16"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("Q8_0/model-Q8_0-00001-of-00002.gguf", "Q8_0"),
        ("model.gguf", ""),
    ],
)
def test_it_reads_the_quantisation_from_the_file_name(name: str, quantization: str) -> None:
    assert quantization_from_name(name) == quantization


def test_it_explains_missing_repos_and_revisions(hub: FakeHub) -> None:
    with pytest.raises(HubError, match=r"There is no repo wiz-test/Nope on the Hub"):
        hub_repo(repo_id="wiz-test/Nope")
    with pytest.raises(HubError, match=r"has no revision 'v2'"):
        hub_repo(repo_id=TINY_REPO, revision="v2")


def test_it_reads_a_models_shape_from_the_first_bytes_of_its_file(hub: FakeHub) -> None:
    repo = hub_repo(repo_id=SMOL_REPO)
    prefix = hub_file_prefix(repo_id=SMOL_REPO, filename=SMOL_FILE, commit=repo.commit)
    assert len(prefix) == HEADER_PREFIX_BYTES
    assert hub.ranges[-1] == (f"{SMOL_REPO}/{SMOL_FILE}", f"bytes=0-{HEADER_PREFIX_BYTES - 1}")
    assert gguf_read_header_prefix(prefix) == {
        "architecture": "llama",
        "context_length": 8192,
        "embedding_length": 576,
        "block_count": 30,
        "head_count": 9,
        "head_count_kv": 3,
    }


@pytest.mark.django_db
def test_it_says_in_numbers_whether_a_file_fits_the_disk_and_each_worker(
    hub: FakeHub, default_model: Any, inference_worker: Any
) -> None:
    repo = hub_repo(repo_id=SMOL_REPO)
    header = gguf_read_header_prefix(
        hub_file_prefix(repo_id=SMOL_REPO, filename=SMOL_FILE, commit=repo.commit)
    )
    workers = worker_states(redis_connection())
    fit = file_fit(hub_file=repo.files[0], header=header, workers=workers)
    # The very estimate a worker makes once the file is here: the same bytes, the same header.
    assert fit.kv_known
    assert fit.n_ctx == 8192
    assert fit.memory_bytes == model_memory_estimate(default_model, 8192)
    assert fit.fits_disk and fit.disk_need_bytes == default_model.size_bytes
    worker = next(w for w in fit.workers if w.worker == "test-inference")
    state = next(s for s in workers if s.name == "test-inference")
    assert worker.free_bytes == min(
        state.memory_budget_bytes - state.memory_used_bytes, state.host_available_bytes
    )
    assert worker.fits == (fit.memory_bytes <= worker.free_bytes)

    partial = file_fit(hub_file=repo.files[0], header=header, workers=[], partial_bytes=1000)
    assert partial.disk_need_bytes == default_model.size_bytes - 1000
    with override_settings(WIZ_DISK_RESERVE_MB=1 << 30):
        assert not file_fit(hub_file=repo.files[0], header=header, workers=[]).fits_disk
    unknown = file_fit(hub_file=repo.files[0], header={}, workers=[])
    assert not unknown.kv_known
    assert unknown.n_ctx == 2048


@pytest.fixture
def silent_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A Hub that never answers: a port that accepts connections (the kernel's backlog) and
    never reads or writes, as a half-open link or a captive network does. HF_ENDPOINT points at
    it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    yield url
    listener.close()


OFFLINE = (
    r"seems to be offline\. To add a model without internet, copy its GGUF file into the "
    r"models folder \(.+\) and press Scan models dir\."
)


# A Hub out of reach waits out the whole deadline; these tests need not wait 6 s for it.
short_deadline = override_settings(WIZ_HUB_DEADLINE_S=1.0)


@short_deadline
@pytest.mark.parametrize("endpoint", ["http://wiz-hub.invalid", "http://127.0.0.1:1"])
def test_a_hub_that_cannot_be_reached_says_the_box_seems_offline(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", endpoint)  # no such name; a closed port
    with pytest.raises(HubError, match=OFFLINE) as raised:
        hub_search(query="SmolLM2")
    assert "Errno" not in str(raised.value)
    with pytest.raises(HubError, match=OFFLINE):
        hub_repo(repo_id=SMOL_REPO)


@short_deadline
def test_a_hub_that_never_answers_fails_within_a_few_seconds(silent_hub: str) -> None:
    started = time.monotonic()
    with pytest.raises(HubError, match=OFFLINE):
        hub_search(query="SmolLM2")
    # The deadline, with room for a loaded machine; without it the page waited 24-27 s (or, on
    # a silent link, until huggingface_hub's own timeout, if ever).
    assert time.monotonic() - started < settings.WIZ_HUB_DEADLINE_S + 4
    with pytest.raises(HubError, match=OFFLINE):
        hub_repo(repo_id=SMOL_REPO)
