"""A local stand-in for the Hugging Face Hub: the endpoints Wiz Web uses, backed by real files.

huggingface_hub's own code talks to it (tests point `HF_ENDPOINT` at it), so what is tested is
the real client against answers shaped like the Hub's:

- `GET /api/models?search=&filter=gguf&limit=`: repo search;
- `GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}`: repo info with its commit;
- `GET /api/models/{repo}/tree/{rev}[/{path}]`: the file tree, with sizes and, for LFS files, the
  sha256 (`lfs.oid`);
- `HEAD` and `GET /{repo}/resolve/{rev}/{file}`: the bytes, with `ETag` (the sha256 for LFS
  files), `X-Repo-Commit`, `X-Linked-Size`, `X-Linked-Etag`, `Content-Length`, `Accept-Ranges`,
  and `Range` answered with 206;
- errors as the Hub sends them: 404 with `X-Error-Code: RepoNotFound`, `RevisionNotFound` or
  `EntryNotFound`, and 401 with `GatedRepo` for a gated repo without its token.

A test can slow the transfer down (`throttle_bytes_per_s`) to catch a download mid-file, or stall
it (`stall_after_bytes`), and reads
how many body bytes each file has served (`served`), which Range requests came (`ranges`) and
every request (`requests`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

BLOCK = 64 * 1024


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class HubFile:
    path: Path
    sha256: str  # what the Hub publishes (a test may publish a wrong one)
    lfs: bool = True

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass
class HubRepo:
    repo_id: str
    commit: str
    files: dict[str, HubFile] = field(default_factory=dict)
    gated: bool = False
    downloads: int = 0


class FakeHub:
    """The server's state, shared by its request threads."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.token = "hf_test_token"  # the token that opens gated repos
        self.throttle_bytes_per_s = 0  # 0: as fast as it can
        # A stalled connection: each response stops after this many bytes (0: never) until
        # `unstall` is set.
        self.stall_after_bytes = 0
        self.unstall = threading.Event()
        self.served: dict[str, int] = defaultdict(int)  # body bytes sent per "repo/file"
        self.ranges: list[tuple[str, str]] = []  # ("repo/file", Range header) per GET
        self.requests: list[str] = []  # "METHOD /path?query" of every request
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def add_repo(self, repo_id: str, *, gated: bool = False, downloads: int = 0) -> HubRepo:
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        repo = HubRepo(repo_id, commit, gated=gated, downloads=downloads)
        self.repos[repo_id] = repo
        return repo

    def add_file(
        self, repo_id: str, name: str, path: Path, *, sha256: str = "", lfs: bool = True
    ) -> HubFile:
        hub_file = HubFile(path, sha256 or sha256_of(path), lfs=lfs)
        self.repos[repo_id].files[name] = hub_file
        return hub_file

    def served_bytes(self, repo_id: str, name: str) -> int:
        with self.lock:
            return self.served[f"{repo_id}/{name}"]

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        # serve_forever looks for a shutdown every poll_interval: 0.5 s by default, which every
        # test using the hub paid at its end (15 s of the quick tier).
        serve = functools.partial(self._server.serve_forever, poll_interval=0.02)
        threading.Thread(target=serve, name="fake-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class HubError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's client expects

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve(body=True)

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def _serve(self, *, body: bool) -> None:
            parts = urlsplit(self.path)
            path = unquote(parts.path)
            with hub.lock:
                hub.requests.append(f"{self.command} {self.path}")
            query = parse_qs(parts.query)
            try:
                if path == "/api/models":
                    self._json(self._search(query))
                elif path.startswith("/api/models/"):
                    self._json(self._api(path.removeprefix("/api/models/")))
                elif "/resolve/" in path:
                    self._resolve(path, body=body)
                else:
                    raise HubError(404, "", "Not found")
            except HubError as exc:
                payload = json.dumps({"error": exc.message}).encode()
                self.send_response(exc.status)
                if exc.code:
                    self.send_header("X-Error-Code", exc.code)
                self.send_header("X-Error-Message", exc.message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if body:
                    self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (a cancelled or killed download)

        def _json(self, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _search(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
            words = (query.get("search") or [""])[0].lower()
            filters = query.get("filter") or []
            limit = int((query.get("limit") or ["50"])[0])
            found = []
            for repo in sorted(hub.repos.values(), key=lambda r: -r.downloads):
                tags = ["gguf"] if any(n.endswith(".gguf") for n in repo.files) else []
                if words not in repo.repo_id.lower() or any(f not in tags for f in filters):
                    continue
                found.append(
                    {
                        "id": repo.repo_id,
                        "modelId": repo.repo_id,
                        "downloads": repo.downloads,
                        "likes": 0,
                        "tags": tags,
                        "gated": "manual" if repo.gated else False,
                        "private": False,
                        "lastModified": "2026-01-01T00:00:00.000Z",
                    }
                )
            return found[:limit]

        def _repo(self, repo_id: str) -> HubRepo:
            repo = hub.repos.get(repo_id)
            if repo is None:
                raise HubError(404, "RepoNotFound", "Repository not found")
            return repo

        def _revision(self, repo: HubRepo, revision: str) -> None:
            if revision not in ("main", repo.commit):
                raise HubError(404, "RevisionNotFound", "Invalid rev id: " + revision)

        def _api(self, rest: str) -> Any:
            match = re.fullmatch(r"([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(/.*)?)?", rest)
            if match is None:
                raise HubError(404, "", "Not found")
            repo_id, kind, revision, subpath = match.groups()
            repo = self._repo(repo_id)
            self._revision(repo, revision or "main")
            if kind == "tree":
                return self._tree(repo, (subpath or "").strip("/"))
            return {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": repo.commit,
                "gated": "manual" if repo.gated else False,
                "private": False,
                "downloads": repo.downloads,
                "tags": ["gguf"],
                "siblings": [{"rfilename": name} for name in sorted(repo.files)],
            }

        def _tree(self, repo: HubRepo, under: str) -> list[dict[str, Any]]:
            entries = []
            prefix = f"{under}/" if under else ""
            for name, hub_file in sorted(repo.files.items()):
                if not name.startswith(prefix):
                    continue
                entry: dict[str, Any] = {
                    "type": "file",
                    "oid": hashlib.sha1(hub_file.sha256.encode()).hexdigest(),
                    "size": hub_file.size,
                    "path": name,
                }
                if hub_file.lfs:
                    entry["lfs"] = {
                        "oid": hub_file.sha256,
                        "size": hub_file.size,
                        "pointerSize": 134,
                    }
                entries.append(entry)
            if under and not entries:
                raise HubError(404, "EntryNotFound", f"{under} does not exist")
            return entries

        def _resolve(self, path: str, *, body: bool) -> None:
            match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if match is None:
                raise HubError(404, "", "Not found")
            repo_id, revision, name = match.groups()
            repo = self._repo(repo_id)
            self._revision(repo, revision)
            hub_file = repo.files.get(name)
            if hub_file is None:
                raise HubError(404, "EntryNotFound", "Entry not found")
            if repo.gated and self.headers.get("Authorization") != f"Bearer {hub.token}":
                raise HubError(
                    401,
                    "GatedRepo",
                    f"Access to model {repo_id} is restricted. You must have access to it and "
                    "be authenticated to access it. Please log in.",
                )
            size = hub_file.size
            start, end = 0, size - 1
            wanted = self.headers.get("Range")
            if wanted:
                ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
                if ranged is None or int(ranged.group(1)) >= size:
                    raise HubError(416, "", "Range Not Satisfiable")
                start = int(ranged.group(1))
                end = min(int(ranged.group(2) or size - 1), size - 1)
            etag = hub_file.sha256 if hub_file.lfs else hashlib.sha1(name.encode()).hexdigest()
            self.send_response(206 if wanted else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{etag}"')
            self.send_header("X-Repo-Commit", repo.commit)
            if hub_file.lfs:
                self.send_header("X-Linked-Size", str(size))
                self.send_header("X-Linked-Etag", f'"{etag}"')
            if wanted:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not body:
                return
            key = f"{repo_id}/{name}"
            with hub.lock:
                hub.ranges.append((key, wanted or ""))
            self._send_bytes(hub_file.path, start, end, key)

        def _send_bytes(self, path: Path, start: int, end: int, key: str) -> None:
            began = time.monotonic()
            sent = 0
            with path.open("rb") as handle:
                handle.seek(start)
                remaining = end - start + 1
                while remaining > 0:
                    block = handle.read(min(BLOCK, remaining))
                    if not block:
                        break
                    self.wfile.write(block)
                    remaining -= len(block)
                    sent += len(block)
                    with hub.lock:
                        hub.served[key] += len(block)
                    if hub.stall_after_bytes and sent >= hub.stall_after_bytes:
                        hub.unstall.wait(timeout=60)
                    rate = hub.throttle_bytes_per_s
                    if rate:
                        ahead = sent / rate - (time.monotonic() - began)
                        if ahead > 0:
                            time.sleep(ahead)

    return Handler
