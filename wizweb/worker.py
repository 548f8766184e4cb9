"""The inference worker class: rq's SimpleWorker, which runs jobs in its own process.

A forking worker would give every job a fresh work-horse that loads the model again; this one
keeps `models_admin.runtime.runtime` (the loaded models) alive across jobs. SimpleWorker sends no
heartbeat while a job runs, so a long generation would look abandoned: `execute_job` keeps the
worker's and the job's heartbeats going from a side thread for as long as the job runs.
"""

from __future__ import annotations

import threading

from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker, WorkerStatus


class InferenceWorker(SimpleWorker):
    def execute_job(self, job: Job, queue: Queue) -> None:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(min(self.job_monitoring_interval, 10)):
                try:
                    self.maintain_heartbeats(job)
                except Exception:  # a missed beat is retried at the next tick
                    self.log.warning("Heartbeat of job %s failed", job.id, exc_info=True)

        heart = threading.Thread(target=beat, name=f"heartbeat-{job.id}", daemon=True)
        self.prepare_execution(job)
        heart.start()
        try:
            self.perform_job(job, queue)
        finally:
            stop.set()
            heart.join()
        self.set_state(WorkerStatus.IDLE)
