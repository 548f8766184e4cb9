"""The job of the download worker: one Download, by id (models_admin.downloads.download_run)."""

from __future__ import annotations

from rq import get_current_job

from models_admin.download_events import DownloadEvents
from models_admin.downloads import download_run
from wizweb.channels_sender import channel_sender


def download_job(download_id: int) -> str:
    job = get_current_job()
    assert job is not None
    download = download_run(
        download_id=download_id,
        job_id=job.id,
        events=DownloadEvents(channel_sender),
        connection=job.connection,
    )
    return f"{download.file}: {download.state}"
