"""Talking to the Hugging Face Hub through huggingface_hub: repo search, a repo's GGUF files with
their sizes and sha256, a file's metadata, and the first bytes of a file (its GGUF header).

`HF_ENDPOINT` and `HF_TOKEN` are huggingface_hub's own settings. huggingface_hub reads
`HF_ENDPOINT` once, when it is imported; we read it at each call and pass it on, so a process
that sets it later (the tests' stand-in Hub) is obeyed. `HF_TOKEN` it reads at each call itself.

Every Hub failure becomes a `HubError` whose message is a sentence a person can act on.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from huggingface_hub import HfApi, RepoFile, constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

# A GGUF file's model keys come before its tokenizer's arrays and fit in a few KB.
HEADER_PREFIX_BYTES = 256 * 1024
QUANT_PATTERN = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32|FP16|FP32)(?![A-Za-z0-9])", re.I
)


class HubError(Exception):
    """A refusal or failure from the Hub, as a sentence for the admin."""


# A person waits for a search or a repo's files. With no internet, resolving the Hub's name
# alone took 24-27 s (the resolver's and huggingface_hub's retries), and a half-open link can
# hang for good (huggingface_hub sets no timeout on these calls), so they run in a thread and
# are given up after WIZ_HUB_DEADLINE_S (6 s; the tests shorten it): the page answers at once
# that the box seems offline. The thread is a daemon, so an abandoned call never holds up the
# process's exit.
T = TypeVar("T")


def _offline() -> HubError:
    return HubError(
        f"The Hub ({hub_endpoint()}) cannot be reached: this box seems to be offline. To add a "
        f"model without internet, copy its GGUF file into the models folder ({settings.MODELS_DIR})"
        " and press Scan models dir."
    )


def _within_deadline(call: Callable[[], T]) -> T:
    outcome: Future[T] = Future()

    def run() -> None:
        try:
            outcome.set_result(call())
        except BaseException as exc:
            outcome.set_exception(exc)

    threading.Thread(target=run, name="hub-call", daemon=True).start()
    try:
        return outcome.result(timeout=settings.WIZ_HUB_DEADLINE_S)
    except FutureTimeout:
        raise _offline() from None


def _is_unreachable(exc: BaseException) -> bool:
    """Whether exc (or what caused it) is a failure to reach the Hub at all: no name
    resolution, no route, a refused or timed-out connection (httpx's and requests' errors
    included, whichever huggingface_hub uses)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (socket.gaierror, ConnectionError, TimeoutError)):
            return True
        if type(seen).__name__ in {"ConnectError", "ConnectTimeout", "ConnectionError"}:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_api() -> HfApi:
    return HfApi(endpoint=hub_endpoint())


def quantization_from_name(filename: str) -> str:
    """The quantisation a GGUF file's name announces (Q4_K_M, IQ3_XS, F16, ...), or ''."""
    found = QUANT_PATTERN.findall(filename.rsplit("/", 1)[-1].removesuffix(".gguf"))
    return found[-1].upper() if found else ""


@dataclass(frozen=True)
class HubModel:
    repo_id: str
    downloads: int
    likes: int
    gated: bool
    last_modified: str


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int
    sha256: str  # "" when the Hub publishes none (a file not stored with LFS)

    @property
    def quantization(self) -> str:
        return quantization_from_name(self.path)

    @property
    def is_split_part(self) -> bool:
        return bool(re.search(r"-\d{5}-of-\d{5}\.gguf$", self.path))


@dataclass(frozen=True)
class HubRepo:
    repo_id: str
    revision: str
    commit: str
    gated: bool
    files: list[HubFile]

    def file(self, path: str) -> HubFile | None:
        return next((f for f in self.files if f.path == path), None)


def _explain(exc: Exception, *, repo_id: str, filename: str = "", revision: str = "") -> HubError:
    """The sentence for a huggingface_hub error."""
    if isinstance(exc, GatedRepoError):
        return HubError(
            f"{repo_id} is a gated repo: accept its terms on the Hub with your account, then set "
            "HF_TOKEN to a token of that account and restart Wiz Web."
        )
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(
            f"There is no repo {repo_id} on the Hub (or it is private: set HF_TOKEN to a token "
            "that can read it)."
        )
    if isinstance(exc, RevisionNotFoundError):
        return HubError(f"{repo_id} has no revision {revision!r}.")
    if isinstance(exc, RemoteEntryNotFoundError):
        return HubError(f"{repo_id} has no file {filename!r}.")
    if isinstance(exc, HFValidationError):
        return HubError(f"{repo_id!r} is not a valid repo name: {exc}")
    if _is_unreachable(exc):
        return _offline()
    return HubError(f"The Hub could not be reached ({type(exc).__name__}: {exc}); try again.")


def _gated(value: Any) -> bool:
    return bool(value) and value is not False


def hub_search(*, query: str, limit: int = 30) -> list[HubModel]:
    """Model repos with GGUF files whose name matches `query`, most downloaded first."""
    return _within_deadline(lambda: _hub_search(query=query, limit=limit))


def _hub_search(*, query: str, limit: int) -> list[HubModel]:
    try:
        found = hub_api().list_models(
            search=query or None, filter="gguf", sort="downloads", limit=limit
        )
        return [
            HubModel(
                repo_id=m.id,
                downloads=int(m.downloads or 0),
                likes=int(m.likes or 0),
                gated=_gated(m.gated),
                last_modified=m.last_modified.isoformat() if m.last_modified else "",
            )
            for m in found
        ]
    except Exception as exc:
        raise _explain(exc, repo_id=query) from exc


def hub_repo(*, repo_id: str, revision: str = "main") -> HubRepo:
    """A repo at a revision: its commit, whether it is gated, and its GGUF files."""
    return _within_deadline(lambda: _hub_repo(repo_id=repo_id, revision=revision))


def _hub_repo(*, repo_id: str, revision: str) -> HubRepo:
    api = hub_api()
    try:
        info = api.model_info(repo_id, revision=revision)
        commit = info.sha or revision
        tree = api.list_repo_tree(repo_id, revision=commit, recursive=True)
        files = [
            HubFile(
                path=entry.path,
                size=int(entry.lfs.size if entry.lfs else entry.size),
                sha256=entry.lfs.sha256 if entry.lfs else "",
            )
            for entry in tree
            if isinstance(entry, RepoFile) and entry.path.lower().endswith(".gguf")
        ]
    except Exception as exc:
        raise _explain(exc, repo_id=repo_id, revision=revision) from exc
    return HubRepo(
        repo_id=repo_id,
        revision=revision,
        commit=commit,
        gated=_gated(info.gated),
        files=sorted(files, key=lambda f: f.path),
    )


def hub_file_url(*, repo_id: str, filename: str, commit: str) -> str:
    return hf_hub_url(repo_id, filename, revision=commit, endpoint=hub_endpoint())


def hub_file_check(*, repo_id: str, filename: str, commit: str) -> int:
    """Ask the Hub for the file itself (a HEAD on `resolve`, as huggingface_hub does before a
    download): it exists and this token may fetch it. Returns its size."""
    url = hub_file_url(repo_id=repo_id, filename=filename, commit=commit)
    try:
        metadata = get_hf_file_metadata(url)
    except Exception as exc:
        raise _explain(exc, repo_id=repo_id, filename=filename, revision=commit) from exc
    return int(metadata.size or 0)


def hub_file_prefix(*, repo_id: str, filename: str, commit: str) -> bytes:
    """The first bytes of a file on the Hub (one Range request), for its GGUF header."""
    url = hub_file_url(repo_id=repo_id, filename=filename, commit=commit)
    headers = build_hf_headers()
    headers["Range"] = f"bytes=0-{HEADER_PREFIX_BYTES - 1}"
    data = b""
    try:
        # Streamed: a server that ignores Range must not send the whole file into memory.
        with get_session().stream(
            "GET", url, headers=headers, timeout=constants.HF_HUB_ETAG_TIMEOUT
        ) as response:
            hf_raise_for_status(response)
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) >= HEADER_PREFIX_BYTES:
                    break
    except Exception as exc:
        raise _explain(exc, repo_id=repo_id, filename=filename, revision=commit) from exc
    return data[:HEADER_PREFIX_BYTES]
