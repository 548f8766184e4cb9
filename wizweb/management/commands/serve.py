"""`manage.py serve`: everything on one box, supervised.

It prepares the database, the default model and the first admin, then hands over to supervisord
(the `supervisor` package), which starts the private Redis (when REDIS_URL is unset), daphne, the
inference workers and the download worker, restarts any that crash, and stops them all on Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from models_admin.local_models import localmodel_register_default
from wizweb.default_model import DefaultModelError, default_model_fetch
from wizweb.redis_server import RedisLaunchError, redis_server_command


def _program(
    name: str, command: list[str], *, priority: int, env: dict[str, str] | None = None, **extra: Any
) -> str:
    environment = {"PYTHONUNBUFFERED": "1", **(env or {})}
    lines = [
        f"[program:{name}]",
        # supervisord expands %(...)s in its config: literal percent signs must be doubled.
        "command=" + shlex.join(command).replace("%", "%%"),
        f"directory={str(settings.BASE_DIR).replace('%', '%%')}",
        f"priority={priority}",
        "autostart=true",
        "autorestart=true",
        "startsecs=2",
        "startretries=1000",
        "stopasgroup=true",
        "killasgroup=true",
        "stopwaitsecs=15",
        "redirect_stderr=true",
        "stdout_logfile=/dev/stdout",
        "stdout_logfile_maxbytes=0",
        "environment=" + ",".join(f'{k}="{v}"' for k, v in environment.items()),
    ]
    lines += [f"{key}={value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


class Command(BaseCommand):
    help = "Start Wiz Web on this box: Redis (unless REDIS_URL), web server and workers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="0.0.0.0", help="Address to listen on.")
        parser.add_argument("--port", type=int, default=8000, help="Port to listen on.")
        parser.add_argument(
            "--workers", type=int, default=1, help="How many inference workers to start."
        )
        parser.add_argument(
            "--prepare-only",
            action="store_true",
            help="Migrate, fetch the default model and create the first admin, then exit.",
        )

    def handle(
        self, *args: Any, host: str, port: int, workers: int, prepare_only: bool, **options: Any
    ) -> None:
        if workers < 0:
            raise CommandError("--workers must be 0 or more.")
        if not 0 < port < 65536:
            raise CommandError("--port must be between 1 and 65535.")
        call_command("migrate", interactive=False, verbosity=0)
        # The last run's processes are gone: their metric files would only add stale gauges
        # (Prometheus takes the counters' fall to zero as the restart it is).
        shutil.rmtree(settings.METRICS_DIR, ignore_errors=True)
        Path(settings.METRICS_DIR).mkdir()
        self._default_model()
        self._first_admin()
        config = self._write_config(host=host, port=port, workers=workers)
        if prepare_only:
            self.stdout.write(f"Prepared; supervisord's configuration is {config}.")
            return
        shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
        self.stdout.write(f"Wiz Web is starting: open http://{shown}:{port}/")
        if host in ("0.0.0.0", "::"):
            self.stdout.write(f"On the LAN: http://{socket.gethostname()}:{port}/")
        self.stdout.write("Press Ctrl-C to stop.")
        self.stdout.flush()
        supervisord = Path(sys.executable).with_name("supervisord")
        os.execv(str(supervisord), [str(supervisord), "--nodaemon", "-c", str(config)])

    def _default_model(self) -> None:
        try:
            default_model_fetch(Path(settings.MODELS_DIR))
        except DefaultModelError as exc:
            raise CommandError(str(exc)) from None
        localmodel_register_default()

    def _first_admin(self) -> None:
        users = get_user_model()
        if users.objects.exists():
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser("admin", "", password)
        self.stdout.write(
            self.style.WARNING(
                f"First start: created the admin account 'admin' with password {password}\n"
                "It is shown only this once; change it after you log in."
            )
        )

    @staticmethod
    def _threads_per_worker(workers: int) -> int:
        if settings.WIZ_THREADS:
            return int(settings.WIZ_THREADS)
        return max(1, (os.cpu_count() or 1) // max(workers, 1))

    def _write_config(self, *, host: str, port: int, workers: int) -> Path:
        run_dir = Path(settings.RUN_DIR)
        python = sys.executable
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        sections = [
            "[supervisord]\n"
            "nodaemon=true\n"
            f"logfile={run_dir / 'supervisord.log'}\n"
            f"pidfile={run_dir / 'supervisord.pid'}\n"
            f"childlogdir={run_dir}\n"
            "loglevel=warn\n" + ("user=root\n" if os.geteuid() == 0 else "")
            # Said out loud so supervisord does not warn that it keeps root's privileges.
        ]
        if settings.USE_PRIVATE_REDIS:
            try:
                command = redis_server_command(settings.PRIVATE_REDIS_SOCKET, run_dir)
            except RedisLaunchError as exc:
                raise CommandError(str(exc)) from None
            sections.append(_program("redis", command, priority=1))
        sections.append(
            _program(
                "web",
                # --verbosity 0: no daphne access log, which writes query strings; the
                # request log (wizweb.request_log) has a line per request instead.
                [
                    python,
                    "-m",
                    "daphne",
                    "-v",
                    "0",
                    "-b",
                    host,
                    "-p",
                    str(port),
                    "wizweb.asgi:application",
                ],
                priority=10,
            )
        )
        if workers:
            sections.append(
                _program(
                    "inference",
                    [python, manage, "inference_worker"],
                    priority=20,
                    # Workers on one box share its cores: llama.cpp threads that outnumber the
                    # cores spin against each other and every answer gets slower.
                    env={"WIZ_THREADS": str(self._threads_per_worker(workers))},
                    numprocs=workers,
                    numprocs_start=1,
                    process_name="%(program_name)s-%(process_num)d",
                )
            )
        sections.append(
            _program(
                "downloads",
                [
                    python,
                    manage,
                    "rqworker",
                    settings.DOWNLOAD_QUEUE,
                    "--worker-class",
                    "models_admin.download_worker.DownloadWorker",
                ],
                priority=20,
            )
        )
        sections.append(
            _program(
                "documents",
                [
                    python,
                    manage,
                    "rqworker",
                    settings.DOCUMENT_QUEUE,
                    "--worker-class",
                    "documents.worker.DocumentWorker",
                ],
                priority=20,
            )
        )
        config = run_dir / "supervisord.conf"
        config.write_text("\n".join(sections))
        return config
