"""`manage.py inference_worker`: one inference worker, on this machine or another one pointed at
the same Redis and database (REDIS_URL, DATABASE_URL, and the model files in WIZ_MODELS_DIR).

Without --model it serves the shared queues and loads whatever model a job asks for, within its
memory budget. With --model it is pinned: it loads that model at once and serves only that
model's queues, and every generation for that model is routed to the pinned workers.

Its name (shown on the model-admin page and in `started` frames) is `<host>-<n>` by default: under
`serve`, supervisord's process name (`inference-1`, ...), so a restarted worker keeps its name and
its control queue; elsewhere a short random suffix.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from inference.presence import control_queue_name, generation_queue_names
from inference.runtime import ModelLoadError, runtime
from inference.worker import InferenceWorker
from models_admin.loading import model_spec
from models_admin.models import LocalModel
from wizweb.redis_server import redis_connection


def default_worker_name() -> str:
    # supervisord tells each child its process name in the environment.
    suffix = os.environ.get("SUPERVISOR_PROCESS_NAME") or uuid.uuid4().hex[:6]
    return f"{socket.gethostname()}-{suffix}"


class Command(BaseCommand):
    help = "Run one inference worker (optionally pinned to one model)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", help="Name of the model this worker holds and serves.")
        parser.add_argument("--name", help="Worker name (unique; random by default).")
        parser.add_argument("--burst", action="store_true", help="Exit when the queues are empty.")

    def handle(
        self, *args: Any, model: str | None, name: str | None, burst: bool, **options: Any
    ) -> None:
        pinned = None
        if model:
            pinned = LocalModel.objects.filter(name=model, state=LocalModel.State.READY).first()
            if pinned is None:
                names = ", ".join(LocalModel.objects.values_list("name", flat=True)) or "none"
                raise CommandError(f"There is no ready model named {model!r} (models: {names}).")
            try:
                runtime.load(model_spec(pinned))
            except ModelLoadError as exc:
                raise CommandError(str(exc)) from None
        connection = redis_connection()
        name = name or default_worker_name()
        queues = [control_queue_name(name), *generation_queue_names(pinned.pk if pinned else None)]
        worker = InferenceWorker(queues, connection=connection, name=name)
        worker.pinned_model = pinned.pk if pinned else None
        connections.close_all()
        worker.work(burst=burst)
