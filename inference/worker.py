"""The inference worker class: rq's SimpleWorker, running many generation jobs at once.

A forking worker would give every job a fresh work-horse that loads the model again; this one
keeps `inference.runtime.runtime` (the loaded models) alive across jobs, and runs each
generation job in a thread of its own against the model's scheduler, which decodes every
running answer in one batch. What it overrides and why:
- `dequeue_job_and_maintain_ttl` takes jobs while the worker has free slots (`WIZ_PARALLEL`),
  in its queues' priority order; when every slot is busy it still takes a job of a better tier
  than the worst one running, so that the scheduler can pause that one for it. Within a queue,
  a job of someone already holding their share of slots (`WIZ_MAX_SLOTS_PER_USER`, half the
  slots by default) is passed over for another person's. Control jobs (load, unload) run in
  the main thread, one at a time, whatever the slots.
- `execute_job` starts the job's thread; rq's per-job state that lives on the worker (the
  current execution) is kept per thread, and jobs are timed out with rq's TimerDeathPenalty,
  since a signal cannot reach a thread;
- `register_birth` first deals with a dead worker of the same name (supervisord restarts a
  crashed `inference-1` as `inference-1`): it clears rq's record of it and has the app fail at
  once the answers it was writing;
- a side thread (`_beat`) publishes the worker's presence every second and as soon as a job
  starts or ends (models, slots, the answers being written, tokens/s, memory, queue depths,
  this process's run), keeps rq's
  worker, job and execution heartbeats alive (rq's SimpleWorker sends none while a job runs),
  and registers the worker with rq again when a restarted Redis has forgotten it;
- another (`_reap`) has the app mend what dead workers left behind every two seconds. It is
  apart from the presence thread because it needs the database: a database that stalls must
  not stop the beats and make a live worker look dead;
- rq's stop-job command aborts that job's generation (its tag is the job id), and
  `kill_horse` (a no-op on a SimpleWorker) aborts every one; a warm shutdown lets the running
  answers end, a cold one aborts them, and either waits for their ends to be saved.

The worker knows nothing of chats: what to reap, and who hears of the worker's state, are
callables named in the `WIZ_WORKER_HOOKS` setting.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psutil
import redis
from django.conf import settings
from django.db import close_old_connections
from django.utils.module_loading import import_string
from rq import worker_registration
from rq.command import parse_payload
from rq.exceptions import DequeueTimeout, StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import TimerDeathPenalty
from rq.worker import SimpleWorker, WorkerStatus

from inference.embedding import embeddings_stop
from inference.engine import generations_abort, generations_abort_all, throughput
from inference.presence import (
    PRESENCE_INTERVAL,
    PRESENCE_TTL,
    PROCESS_RUN,
    WorkerState,
    worker_process_gone,
    worker_state_get,
    worker_state_publish,
    worker_state_remove,
)
from inference.runtime import runtime
from wizweb.rq_registration import rq_registration_renew

REAP_EVERY = 2.0
RQ_HEARTBEAT_EVERY = 10.0
# How often a worker with every slot busy looks for a job that may pause one.
FULL_POLL = 0.1
# rq's worker heartbeat from the loop that takes jobs (it runs 10 times a second while every
# slot is busy); the worker's key lives for minutes, so every few seconds is plenty.
LOOP_HEARTBEAT_EVERY = 5.0
CONTROL_PREFIX = "control."


@dataclass(eq=False)
class _Running:
    job: Job
    tier: int  # 0 is the most urgent; control jobs are -1
    owner: str
    thread: threading.Thread | None = None
    execution: Execution | None = None


def _hook(name: str) -> Any:
    path = settings.WIZ_WORKER_HOOKS.get(name)
    return import_string(path) if path else None


class InferenceWorker(SimpleWorker):
    death_penalty_class = TimerDeathPenalty
    pinned_model: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._local = threading.local()
        super().__init__(*args, **kwargs)
        self.slots: int = settings.WIZ_PARALLEL
        self._running: dict[str, _Running] = {}
        self._room = threading.Condition()
        self._stop_beating = threading.Event()
        self._changed = threading.Event()  # wakes the presence thread: a job started or ended
        self._last_rq_heartbeat = 0.0
        self._side_threads: list[threading.Thread] = []
        self._cold = False

    # rq keeps the running job's execution on the worker; here each job thread has its own.
    @property  # type: ignore[override]
    def execution(self) -> Execution | None:
        return getattr(self._local, "execution", None)

    @execution.setter
    def execution(self, value: Execution | None) -> None:
        self._local.execution = value

    def _tier(self, queue: Queue) -> int:
        if queue.name.startswith(CONTROL_PREFIX):
            return -1
        generation = [q.name for q in self.queues if not q.name.startswith(CONTROL_PREFIX)]
        return generation.index(queue.name) if queue.name in generation else len(generation)

    def _generations(self) -> list[_Running]:
        return [r for r in self._running.values() if r.tier >= 0]

    # -- birth and death -----------------------------------------------------------------------

    def register_birth(self) -> None:
        name_is_free = self._forget_dead_namesake()
        super().register_birth()
        self._publish()
        reap_namesake = _hook("reap_namesake")
        if name_is_free and reap_namesake is not None:
            try:
                reap_namesake(connection=self.connection, worker=self.name, run=PROCESS_RUN)
            except Exception:  # the periodic reaper finds them too, a few seconds later
                self.log.warning(
                    "Worker %s: could not reap a dead namesake", self.name, exc_info=True
                )
        started = _hook("started")
        if started is not None:
            try:
                started(connection=self.connection)
            except Exception:  # background work: it waits for the next start, or a question
                self.log.warning("Worker %s: the start hook failed", self.name, exc_info=True)
        self._side_threads = [
            threading.Thread(target=self._beat, name="presence", daemon=True),
            threading.Thread(target=self._reap, name="reaper", daemon=True),
        ]
        for thread in self._side_threads:
            thread.start()

    def register_death(self) -> None:
        self._wait_for_answers()
        self._stop_beating.set()
        self._changed.set()
        for thread in self._side_threads:
            thread.join(timeout=5)
        worker_state_remove(self.connection, self.name)
        super().register_death()

    def _wait_for_answers(self) -> None:
        """Let the running answers end (aborted at once on a cold shutdown) and be saved."""
        with self._room:
            threads = [r.thread for r in self._running.values() if r.thread is not None]
        embeddings_stop()  # background work: it ends after its batch, not with the document
        if self._cold:
            generations_abort_all()
        for thread in threads:
            thread.join()

    def request_force_stop(self, signum: int, frame: Any) -> None:
        # A second Ctrl-C: abort the answers being written (their text is saved as aborted).
        self._cold = True
        generations_abort_all()
        super().request_force_stop(signum, frame)

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

    # -- presence ------------------------------------------------------------------------------

    def state(self) -> WorkerState:
        with self._room:
            messages = [r.job.id for r in self._generations()]
        slots = {
            name: {"total": s.total, "busy": s.busy, "waiting": s.waiting}
            for name, s in runtime.slots().items()
        }
        return WorkerState(
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            pinned_model=self.pinned_model,
            models=runtime.loaded(),
            busy=bool(messages),
            current_message=messages[0] if messages else "",
            messages=messages,
            slots=slots,
            tokens_per_s=round(throughput.per_second(), 1),
            rss_bytes=psutil.Process().memory_info().rss,
            memory_budget_bytes=runtime.budget_bytes,
            memory_used_bytes=runtime.used_bytes(),
            prompt_cache_bytes=runtime.prefix_cache.stats().bytes,
            host_available_bytes=psutil.virtual_memory().available,
            queue_depths={q.name: q.count for q in self.queues},
            run=PROCESS_RUN,
        )

    def _publish(self) -> None:
        state = self.state()
        worker_state_publish(self.connection, state)
        announce = _hook("state")
        if announce is not None:
            announce(state)

    def set_state(self, state: str, pipeline: Any = None) -> None:
        # rq sets IDLE whenever it waits for a job; while answers are written it is busy.
        if state == WorkerStatus.IDLE and self._running:
            state = WorkerStatus.BUSY
        super().set_state(state, pipeline=pipeline)

    def _publish_soon(self) -> None:
        """Have the presence thread publish now, off the thread that takes jobs: a burst of
        prompts is taken without a presence write per job, and gets one or two of them."""
        self._changed.set()

    def _beat(self) -> None:
        last_rq_beat = 0.0
        while not self._stop_beating.is_set():
            self._changed.wait(PRESENCE_INTERVAL)
            self._changed.clear()
            if self._stop_beating.is_set():
                return
            try:
                self._publish()
                if rq_registration_renew(self):
                    self.log.warning(
                        "Worker %s: Redis had forgotten it; registered again", self.name
                    )
                now = time.monotonic()
                if now - last_rq_beat >= RQ_HEARTBEAT_EVERY:
                    self._job_heartbeats()
                    last_rq_beat = now
            except Exception:  # a missed beat is retried at the next tick
                self.log.warning("Worker %s: presence update failed", self.name, exc_info=True)

    def _job_heartbeats(self) -> None:
        """rq's heartbeats of the worker and of every job it runs, whose registries expire
        them otherwise (rq's own `maintain_heartbeats` knows one job)."""
        with self._room:
            running = [r for r in self._running.values() if r.execution is not None]
        with self.connection.pipeline() as pipeline:
            self.heartbeat(self.job_monitoring_interval + 60, pipeline=pipeline)
            for entry in running:
                ttl = int(self.get_heartbeat_ttl(entry.job))
                assert entry.execution is not None
                entry.execution.heartbeat(entry.job.started_job_registry, ttl, pipeline=pipeline)
                entry.job.heartbeat(self._now(), ttl, pipeline=pipeline, xx=True)
            pipeline.execute()

    @staticmethod
    def _now() -> Any:
        from rq.utils import now

        return now()

    def _reap(self) -> None:
        reap = _hook("reap")
        if reap is None:
            return
        while not self._stop_beating.wait(REAP_EVERY):
            try:
                close_old_connections()
                reap(connection=self.connection)
            except Exception:  # retried at the next tick
                self.log.warning("Worker %s: reaping failed", self.name, exc_info=True)

    # -- taking jobs ---------------------------------------------------------------------------

    def _open_queues(self) -> list[Queue]:
        """The queues a job may be taken from now: all of them while a slot is free; when every
        slot is busy, the control queue and the queues of tiers better than the worst running
        one, while fewer than `slots` answers of that tier or better run (one of worse tier can
        be paused for it)."""
        with self._room:
            running = self._generations()
        if len(running) < self.slots:
            return list(self.queues)
        open_queues = []
        for queue in self.queues:
            tier = self._tier(queue)
            urgent = sum(1 for r in running if r.tier <= tier) < self.slots
            if tier < 0 or (urgent and any(r.tier > tier for r in running)):
                open_queues.append(queue)
        return open_queues

    def _share(self) -> int:
        return settings.WIZ_MAX_SLOTS_PER_USER or max(1, self.slots // 2)

    def _fair_pick(self, queues: list[Queue]) -> tuple[Job, Queue] | None:
        """A job from further back in its queue when the one at its head belongs to someone
        who holds their share of slots; None when the head is fair (rq takes it)."""
        with self._room:
            holding = Counter(r.owner for r in self._generations())
        share = self._share()
        if not holding or max(holding.values()) < share:
            return None  # the head of any queue is fair: nothing to read
        for queue in queues:
            if self._tier(queue) < 0:
                if queue.count:
                    return None  # control jobs first, as rq's order has it
                continue
            ids = [i.decode() for i in self.connection.lrange(queue.key, 0, 49)]  # type: ignore[union-attr]
            if not ids:
                continue
            jobs = [j for j in Job.fetch_many(ids, connection=self.connection) if j is not None]
            if not jobs or holding[jobs[0].meta.get("owner", "")] < share:
                return None
            for job in jobs[1:]:
                if holding[job.meta.get("owner", "")] < share:
                    if self.connection.lrem(queue.key, 1, job.id):
                        return job, queue
                    return None  # another worker took it: look again next time
            return None
        return None

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """The next job to run, waiting while the slots are full (see `_open_queues`).

        rq's own loop blocks in one BLPOP for minutes; this one blocks a second at a time, so
        that a slot freed or a stop asked is heard at once. `timeout` None is burst mode: None
        once nothing is queued and nothing runs."""
        self.set_state(WorkerStatus.IDLE)
        self.procline("Listening on " + ",".join(self.queue_names()))
        backoff = 1.0
        while True:
            if self._stop_requested:
                raise StopRequested()
            try:
                if time.monotonic() - self._last_rq_heartbeat >= LOOP_HEARTBEAT_EVERY:
                    self.heartbeat()
                    self._last_rq_heartbeat = time.monotonic()
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                queues = self._open_queues()
                if len(queues) < len(self.queues) and not any(q.count for q in queues):
                    with self._room:
                        self._room.wait(FULL_POLL)
                    continue
                result = self._fair_pick(queues) or self.queue_class.dequeue_any(
                    queues,
                    None if timeout is None else 1,
                    connection=self.connection,
                    job_class=self.job_class,
                    serializer=self.serializer,
                    death_penalty_class=self.death_penalty_class,
                )
                backoff = 1.0
            except DequeueTimeout:
                continue
            except redis.exceptions.ConnectionError as exc:
                self.log.error("Worker %s: Redis is away (%s); retrying", self.name, exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if result is not None:
                job, queue = result
                self.log.info("Worker %s: %s: %s", self.name, queue.name, job.id)
                return job, queue
            with self._room:
                if not self._running:
                    return None  # burst mode, and nothing left to do
                self._room.wait(FULL_POLL)

    # -- running jobs --------------------------------------------------------------------------

    def execute_job(self, job: Job, queue: Queue) -> None:
        tier = self._tier(queue)
        entry = _Running(job, tier, str(job.meta.get("owner", "")))
        with self._room:
            self._running[job.id] = entry
        if tier < 0:
            # Loads and unloads, in the main thread: one at a time, between dequeues.
            self._run_job(entry, queue)
            return
        entry.thread = threading.Thread(
            target=self._run_job, args=(entry, queue), name=f"job-{job.id[:8]}", daemon=True
        )
        entry.thread.start()
        self._publish_soon()

    def _run_job(self, entry: _Running, queue: Queue) -> None:
        job = entry.job
        try:
            close_old_connections()
            entry.execution = self.prepare_execution(job)
            self.perform_job(job, queue)
        except Exception:
            self.log.exception("Worker %s: job %s could not be run", self.name, job.id)
        finally:
            close_old_connections()
            with self._room:
                self._running.pop(job.id, None)
                self._room.notify_all()
            self.set_state(WorkerStatus.IDLE)
            self._publish_soon()

    def handle_payload(self, message: Any) -> None:
        # rq's stop-job command (django-rq's stop button) asks for one job of this worker:
        # with many running, the job id says which generation to abort. It ends as an
        # aborted answer, not a failed job.
        payload = parse_payload(message)
        if payload.get("command") == "stop-job":
            job_id = str(payload.get("job_id") or "")
            if job_id in self._running and generations_abort(job_id):
                return
        super().handle_payload(message)

    def kill_horse(self, sig: Any = None) -> None:
        # There is no horse to kill: stop the generations instead.
        if generations_abort_all():
            self._stopped_job_id = None
