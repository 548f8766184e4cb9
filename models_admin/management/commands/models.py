"""`manage.py models`: the model admin for a terminal (a headless box, a script).

    models search QUERY               repos on the Hub with GGUF files
    models files REPO [--revision R]  a repo's GGUF files: size, quantisation, whether they fit
    models download REPO FILE [--revision R]
                                      fetch a file in the foreground, with a progress bar
    models list                       the models on disk and the downloads under way
    models rm NAME_OR_ID [--yes]      delete a model and its file
    models scan [--add-only]          register the GGUF files found in the models dir

`download` runs the same service as the download worker, in this process; Ctrl-C cancels it
and keeps the partial file, and the same command again resumes it.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from inference.presence import worker_states
from models_admin.download_events import DownloadEvents
from models_admin.downloads import DownloadRefused, download_run, download_start
from models_admin.fit import disk_room_bytes, gib, repo_fits
from models_admin.hub import HubError, hub_repo, hub_search
from models_admin.local_models import ModelInUse, localmodel_delete, localmodel_scan
from models_admin.models import Download, LocalModel
from models_admin.transfer import ProgressReport, interrupt_cancels_transfer, lease_key
from wizweb.channels_sender import channel_sender
from wizweb.redis_server import redis_connection

# How long `download` follows a download that no process is fetching before it gives up.
FOLLOW_PATIENCE = 30


class Command(BaseCommand):
    help = "Search the Hub, download GGUF models, and list, delete or scan the local ones."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        search = commands.add_parser("search", help="Search the Hub for repos with GGUF files.")
        search.add_argument("query")
        search.add_argument("--limit", type=int, default=20)
        files = commands.add_parser("files", help="List a repo's GGUF files.")
        files.add_argument("repo_id", metavar="REPO")
        files.add_argument("--revision", default="main")
        download = commands.add_parser("download", help="Download a GGUF file of a repo.")
        download.add_argument("repo_id", metavar="REPO")
        download.add_argument("filename", metavar="FILE")
        download.add_argument("--revision", default="main")
        commands.add_parser("list", help="The models on disk and the downloads under way.")
        remove = commands.add_parser("rm", help="Delete a model and its file.")
        remove.add_argument("model", metavar="NAME_OR_ID")
        remove.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")
        scan = commands.add_parser("scan", help="Register the GGUF files found in the models dir.")
        scan.add_argument(
            "--add-only",
            action="store_true",
            help="Only register new files; leave alone the models whose file is not here "
            "(on a worker machine: the server's).",
        )

    def handle(self, *args: Any, command: str, **options: Any) -> None:
        # One line per HTTP request would tear the progress bar apart.
        logging.getLogger("httpx2").setLevel(logging.WARNING)
        try:
            getattr(self, f"_{command}")(**options)
        except (DownloadRefused, HubError, ModelInUse) as exc:
            raise CommandError(str(exc)) from None

    def _search(self, *, query: str, limit: int, **_: Any) -> None:
        found = hub_search(query=query, limit=limit)
        if not found:
            self.stdout.write(f"No repo with GGUF files matches {query!r}.")
            return
        width = max(len(m.repo_id) for m in found)
        for model in found:
            gated = "  gated" if model.gated else ""
            self.stdout.write(f"{model.repo_id:<{width}}  {model.downloads:>10,} downloads{gated}")

    def _files(self, *, repo_id: str, revision: str, **_: Any) -> None:
        repo = hub_repo(repo_id=repo_id, revision=revision)
        if not repo.files:
            self.stdout.write(f"{repo_id} has no GGUF files.")
            return
        room = disk_room_bytes()
        self.stdout.write(f"{repo_id} at {repo.commit[:12]}; {gib(room)} free on the models disk")
        for fit in repo_fits(repo=repo, workers=worker_states(redis_connection())):
            hub_file = fit.file
            memory = f"needs {gib(fit.memory_bytes)} loaded at {fit.n_ctx} tokens"
            if not fit.kv_known:
                memory += " (weights only: header unread)"
            places = ", ".join(
                f"{w.worker} {'fits' if w.fits else 'does not fit'} ({gib(w.free_bytes)} free)"
                for w in fit.workers
            )
            self.stdout.write(
                f"  {hub_file.path}  {gib(hub_file.size)}  {hub_file.quantization or '?'}  "
                f"{'disk ok' if fit.fits_disk else 'NO ROOM ON DISK'}; {memory}"
                + (f"; {places}" if places else "")
            )

    def _download(self, *, repo_id: str, filename: str, revision: str, **_: Any) -> None:
        download, created = download_start(
            repo_id=repo_id, filename=filename, revision=revision, enqueue=False
        )
        bar = tqdm(
            total=download.total_bytes,
            initial=download.bytes_done,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=filename.rsplit("/", 1)[-1],
            file=sys.stderr,
        )

        def show(progress: ProgressReport) -> None:
            bar.update(progress.bytes - bar.n)

        try:
            with interrupt_cancels_transfer():
                if created:
                    download = download_run(
                        download_id=download.pk,
                        job_id=download.job_id,
                        events=DownloadEvents(channel_sender),
                        connection=redis_connection(),
                        on_progress=show,
                    )
                else:
                    self.stdout.write(
                        f"Already being downloaded (download {download.pk}); following it."
                    )
                    download = self._follow(download, show)
        except KeyboardInterrupt:
            download.refresh_from_db()
        bar.close()
        if download.state == Download.State.CANCELLED or download.is_active:
            kept = download.part_path.stat().st_size if download.part_path.exists() else 0
            raise CommandError(
                f"Cancelled; {kept:,} bytes are kept. Run the same command to resume."
            )
        if download.state == Download.State.DONE and download.local_model is not None:
            self.stdout.write(
                f"Downloaded and verified {download.file}: model {download.local_model.name!r}."
            )
        else:
            raise CommandError(download.error or f"The download ended {download.state}.")

    def _follow(self, download: Download, show: Any) -> Download:
        """Watch a download another process runs, through its row."""
        connection = redis_connection()
        unattended_since = time.monotonic()
        while download.is_active:
            time.sleep(0.5)
            download.refresh_from_db()
            if connection.exists(lease_key(download.pk)):
                unattended_since = time.monotonic()
            elif time.monotonic() - unattended_since > FOLLOW_PATIENCE:
                raise CommandError(
                    f"Nobody has fetched download {download.pk} for {FOLLOW_PATIENCE} s: is the "
                    "download worker running? (`serve` starts one.)"
                )
            show(
                ProgressReport(
                    bytes=download.bytes_done,
                    total=download.total_bytes,
                    bytes_per_s=0.0,
                    percent=download.percent,
                    eta_s=None,
                )
            )
        return download

    def _list(self, **_: Any) -> None:
        models = list(LocalModel.objects.all())
        if not models:
            self.stdout.write("No models yet.")
        for model in models:
            meta = model.metadata
            default = "  default" if model.is_default else ""
            self.stdout.write(
                f"{model.pk:>4}  {model.name}  {gib(model.size_bytes)}  "
                f"{meta.get('quantization', '')}  {meta.get('architecture', '')}  "
                f"ctx {meta.get('context_length', 0)}  {model.state}{default}  {model.file}"
            )
        for download in Download.objects.filter(state__in=Download.ACTIVE):
            self.stdout.write(
                f"downloading {download.file}: {download.state}, {download.percent} % of "
                f"{gib(download.total_bytes)}"
            )

    def _rm(self, *, model: str, yes: bool, **_: Any) -> None:
        found = LocalModel.objects.filter(pk=int(model)) if model.isdigit() else None
        if not found:
            found = LocalModel.objects.filter(name=model)
        chosen = found.first()
        if chosen is None:
            raise CommandError(f"There is no model {model!r}; `models list` shows them.")
        if not yes:
            if not sys.stdin.isatty():
                raise CommandError(f"Add --yes to delete {chosen.name} without a question.")
            answer = input(f"Delete {chosen.name} and its file {chosen.file}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                self.stdout.write("Kept.")
                return
        localmodel_delete(model=chosen)
        self.stdout.write(f"Deleted {chosen.name}.")

    def _scan(self, *, add_only: bool, **_: Any) -> None:
        report = localmodel_scan(add_only=add_only)
        for model in report.added:
            self.stdout.write(f"Registered {model.file} as {model.name!r}.")
        for model in report.missing:
            self.stdout.write(f"Missing: {model.file} ({model.name} is marked failed).")
        for file, why in report.unreadable:
            self.stdout.write(f"Skipped {file}: {why}")
        if not (report.added or report.missing or report.unreadable):
            self.stdout.write("Nothing new in the models dir.")
