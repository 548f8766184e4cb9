"""The inference worker class: rq's SimpleWorker, which runs jobs in its own process.

A forking worker would give every job a fresh work-horse that loads the model again; this one
keeps `models_admin.runtime.runtime` (the loaded models) alive across jobs. What it overrides
and why:
- `register_birth` first deals with a dead worker of the same name (supervisord restarts a
  crashed `inference-1` as `inference-1`): it clears rq's record of it and fails at once the
  answers it was writing;
- a side thread (`_beat`) publishes the worker's presence every second (models, busy, memory,
  queue depths, this process's run), keeps rq's worker and job heartbeats alive during a long
  generation (rq's SimpleWorker sends none while a job runs), and registers the worker with rq
  again when a restarted Redis has forgotten it (`wizweb.rq_registration`);
- another (`_reap`) mends what dead workers left behind every two seconds. It is apart from the
  presence thread because it needs the database: a database that stalls (SQLite locked for
  20 s) must not stop the beats and make a live worker look dead;
- `kill_horse`, a no-op on a SimpleWorker, aborts the running generation, so rq's own stop-job
  command works;
- `execute_job` refreshes the database connection, which no request cycle does here.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import psutil
from django.db import close_old_connections
from rq import worker_registration
from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker, WorkerStatus

from chat.generation import generation_abort_current
from chat.services import generations_reap, generations_reap_namesake
from models_admin.download_events import models_group_message
from models_admin.runtime import runtime
from models_admin.workers import (
    MODELS_GROUP,
    PRESENCE_INTERVAL,
    PRESENCE_TTL,
    PROCESS_RUN,
    WorkerState,
    worker_process_gone,
    worker_state_get,
    worker_state_publish,
    worker_state_remove,
)
from wizweb.channels_sender import channel_sender
from wizweb.rq_registration import rq_registration_renew

REAP_EVERY = 2.0
RQ_HEARTBEAT_EVERY = 10.0


class InferenceWorker(SimpleWorker):
    pinned_model: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._current_job: Job | None = None
        self._stop_beating = threading.Event()
        self._side_threads: list[threading.Thread] = []

    def register_birth(self) -> None:
        name_is_free = self._forget_dead_namesake()
        super().register_birth()
        self._publish()
        if name_is_free:
            try:
                self._send(
                    generations_reap_namesake(
                        connection=self.connection, worker=self.name, run=PROCESS_RUN
                    )
                )
            except Exception:  # the periodic reaper finds them too, a few seconds later
                self.log.warning(
                    "Worker %s: could not reap a dead namesake", self.name, exc_info=True
                )
        self._side_threads = [
            threading.Thread(target=self._beat, name="presence", daemon=True),
            threading.Thread(target=self._reap, name="reaper", daemon=True),
        ]
        for thread in self._side_threads:
            thread.start()

    def register_death(self) -> None:
        self._stop_beating.set()
        for thread in self._side_threads:
            thread.join(timeout=5)
        worker_state_remove(self.connection, self.name)
        super().register_death()

    def _forget_dead_namesake(self) -> bool:
        """Whether no other process of this name is alive, after clearing what a dead one left.

        A worker killed outright leaves its presence record for PRESENCE_TTL seconds and rq's
        record of it for minutes, which would keep a restarted worker of the same name from
        starting. One that ran on this host with a pid that is gone is known dead at once;
        otherwise the expiry of its presence record tells."""
        deadline = time.monotonic() + PRESENCE_TTL + 1
        while (other := worker_state_get(self.connection, self.name)) is not None:
            if worker_process_gone(other):
                worker_state_remove(self.connection, self.name)
                break
            if time.monotonic() > deadline:
                return False  # really alive: rq refuses the duplicate name with its own message
            time.sleep(0.5)
        if self.connection.exists(self.key) and not self.connection.hexists(self.key, "death"):
            self.log.warning(
                "Worker %s: clearing the record of a dead worker of this name", self.name
            )
            worker_registration.unregister(self)
            self.connection.delete(self.key)
        return True

    def state(self) -> WorkerState:
        return WorkerState(
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            pinned_model=self.pinned_model,
            models=runtime.loaded(),
            busy=self._current_job is not None,
            current_message=self._current_job.id if self._current_job else "",
            rss_bytes=psutil.Process().memory_info().rss,
            memory_budget_bytes=runtime.budget_bytes,
            memory_used_bytes=runtime.used_bytes(),
            host_available_bytes=psutil.virtual_memory().available,
            queue_depths={q.name: q.count for q in self.queues},
            run=PROCESS_RUN,
        )

    def _publish(self) -> None:
        state = self.state()
        worker_state_publish(self.connection, state)
        channel_sender.send(MODELS_GROUP, models_group_message(state.as_frame()))

    def _beat(self) -> None:
        last_rq_beat = 0.0
        while not self._stop_beating.wait(PRESENCE_INTERVAL):
            try:
                self._publish()
                if rq_registration_renew(self):
                    self.log.warning(
                        "Worker %s: Redis had forgotten it; registered again", self.name
                    )
                now = time.monotonic()
                job = self._current_job
                if job is not None and now - last_rq_beat >= RQ_HEARTBEAT_EVERY:
                    self.maintain_heartbeats(job)
                    last_rq_beat = now
            except Exception:  # a missed beat is retried at the next tick
                self.log.warning("Worker %s: presence update failed", self.name, exc_info=True)

    def _reap(self) -> None:
        while not self._stop_beating.wait(REAP_EVERY):
            try:
                close_old_connections()
                self._send(generations_reap(connection=self.connection))
            except Exception:  # retried at the next tick
                self.log.warning("Worker %s: reaping failed", self.name, exc_info=True)

    @staticmethod
    def _send(frames: list[tuple[str, dict[str, Any]]]) -> None:
        for group, frame in frames:
            channel_sender.send(group, {"type": "chat.frame", "frame": frame})

    def execute_job(self, job: Job, queue: Queue) -> None:
        close_old_connections()
        self.prepare_execution(job)
        self._current_job = job
        self._publish()
        try:
            self.perform_job(job, queue)
        finally:
            self._current_job = None
            close_old_connections()
        self.set_state(WorkerStatus.IDLE)
        self._publish()

    def kill_horse(self, sig: Any = None) -> None:
        # rq's stop-job command lands here; there is no horse to kill, so stop the generation.
        # It ends as an aborted answer, not a failed job.
        if generation_abort_current():
            self._stopped_job_id = None
