"""The download worker class: rq's forking Worker on the downloads queue (`serve` starts it as
`rqworker downloads --worker-class models_admin.download_worker.DownloadWorker`).

What it overrides and why:
- `register_birth` starts a side thread that every few seconds queues again the downloads
  nobody is fetching (their worker was killed, or `serve` restarted and the private Redis forgot
  its queue), so they resume from their partial files without anyone asking, and registers the
  worker with rq again when a restarted Redis has forgotten it (`wizweb.rq_registration`);
- `handle_warm_shutdown_request`: rq's warm shutdown waits for the running job, which for a
  download may be an hour; the horse is stopped at once instead (its partial file stays, and
  the next worker resumes it);
- `handle_work_horse_killed` frees the dead horse's lease, so its download is taken up again
  without waiting for the lease to expire.

The side thread is the only one here that touches the database: a horse forked from the main
thread must not inherit an open connection (its thread-local connections are the main thread's).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.db import close_old_connections
from rq.job import Job
from rq.worker import Worker

from models_admin.downloads import downloads_revive
from models_admin.transfer import lease_key
from wizweb.rq_registration import rq_registration_renew

REVIVE_EVERY = 2.0


class DownloadWorker(Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stop_reviving = threading.Event()
        self._reviver: threading.Thread | None = None

    def register_birth(self) -> None:
        super().register_birth()
        self._reviver = threading.Thread(target=self._revive, name="revive", daemon=True)
        self._reviver.start()

    def register_death(self) -> None:
        self._stop_reviving.set()
        if self._reviver is not None:
            self._reviver.join(timeout=5)
        super().register_death()

    def _revive(self) -> None:
        while True:
            try:
                if rq_registration_renew(self):
                    self.log.warning("Redis had forgotten this worker; registered it again")
                close_old_connections()
                for download in downloads_revive(connection=self.connection):
                    self.log.info("Resuming the download of %s", download.file)
            except Exception:  # retried at the next tick
                self.log.warning("Could not look for abandoned downloads", exc_info=True)
            if self._stop_reviving.wait(REVIVE_EVERY):
                return

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()
        if self.horse_pid:
            self.log.info("Stopping the running download; it resumes at the next start")
            self.kill_horse(signal.SIGTERM)

    def handle_work_horse_killed(self, job: Job, retpid: int, ret_val: int, rusage: Any) -> None:
        download_id = job.args[0] if job.args else None
        if isinstance(download_id, int):
            self.connection.delete(lease_key(download_id))
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
