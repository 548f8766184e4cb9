"""The documents worker class: rq's forking Worker on the documents queue (`serve` starts it as
`rqworker documents --worker-class documents.worker.DocumentWorker`).

Forking, so that a file that crashes its reader or eats memory takes down only the horse, and
rq's time limit (`WIZ_DOCUMENT_INDEX_TIMEOUT`) stops a reading that never ends. What it
overrides and why:
- `register_birth` starts a side thread that every few seconds fails the documents whose job
  died with its worker and queues again those Redis forgot (`documents.services.documents_reap`),
  and registers the worker with rq again when a restarted Redis has forgotten it;
- `handle_work_horse_killed` fails the dead horse's document at once with a sentence, rather
  than leaving it "indexing" until the reaper notices.

The side thread is the only one here that touches the database before a fork: a horse forked
from the main thread must not inherit an open connection.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db import close_old_connections, connection
from rq.job import Job
from rq.worker import Worker

from documents.events import DocumentEvents
from documents.models import Document
from documents.services import document_job_died, documents_reap
from wizweb.channels_sender import channel_sender
from wizweb.rq_registration import rq_registration_renew

REAP_EVERY = 2.0


class DocumentWorker(Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stop_reaping = threading.Event()
        self._reaper: threading.Thread | None = None

    def register_birth(self) -> None:
        super().register_birth()
        self._reaper = threading.Thread(target=self._reap, name="reap", daemon=True)
        self._reaper.start()

    def register_death(self) -> None:
        self._stop_reaping.set()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
        super().register_death()

    def _reap(self) -> None:
        while True:
            try:
                if rq_registration_renew(self):
                    self.log.warning("Redis had forgotten this worker; registered it again")
                close_old_connections()
                for document in documents_reap(connection=self.connection):
                    self.log.info("Document %s: its job was gone (%s)", document.pk, document.state)
            except Exception:  # tried again at the next tick
                self.log.warning("Could not look for abandoned documents", exc_info=True)
            if self._stop_reaping.wait(REAP_EVERY):
                return

    def handle_work_horse_killed(self, job: Job, retpid: int, ret_val: int, rusage: Any) -> None:
        document_id = job.args[0] if job.args else None
        if isinstance(document_id, int):
            try:
                close_old_connections()
                owner = Document.objects.filter(pk=document_id).values_list("owner_id", flat=True)
                events = DocumentEvents(channel_sender, user_id=owner[0]) if owner else None
                document_job_died(document_id=document_id, job_id=job.id, events=events)
                if events is not None:
                    events.flush()
            except Exception:  # the reaper fails it a little later
                self.log.warning("Could not fail document %s", document_id, exc_info=True)
            finally:
                # The main thread forks the next horse: it must not inherit this connection.
                connection.close()
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
