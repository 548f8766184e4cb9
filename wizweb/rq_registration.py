"""Keeping rq's record of a worker after Redis forgot it.

rq writes a worker's record (its hash, and its key in the `rq:workers` sets that `Worker.all`
reads) once, at birth; afterwards it only refreshes the hash's heartbeat field. The private Redis
keeps nothing on disk, so after it restarts a worker goes on working but rq no longer lists it:
`/healthz` said "No download worker is running." until `serve` was restarted. The side threads
of our worker classes call `rq_registration_renew` on every beat.
"""

from __future__ import annotations

from rq import worker_registration
from rq.worker import BaseWorker


def rq_registration_renew(worker: BaseWorker) -> bool:
    """Register the worker again if Redis no longer lists it; True if it had to."""
    connection = worker.connection
    if connection.sismember(worker.redis_workers_keys, worker.key):
        return False
    record = {**worker.serialize(), "state": worker.get_state()}
    with connection.pipeline() as pipe:
        # What is there is only the heartbeat field rq has written since the restart.
        pipe.delete(worker.key)
        pipe.hset(worker.key, mapping=record)
        worker_registration.register(worker, pipe)
        pipe.expire(worker.key, worker.worker_ttl + 60)
        pipe.execute()
    return True
