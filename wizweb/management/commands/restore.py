"""`manage.py restore PATH`: put a backup's database and secret key in place, on a stopped
server (see wizweb.backup)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from wizweb.backup import BackupError, backup_restore


class Command(BaseCommand):
    help = "Restore a backup made by `manage.py backup`; the server must be stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="A file written by `manage.py backup`.")

    def handle(self, *args: Any, path: Path, **options: Any) -> None:
        try:
            restored = backup_restore(path=path.expanduser().absolute())
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        counts = ", ".join(f"{n} {what}" for what, n in restored.counts.items())
        key = " and the secret key" if restored.secret_key else ""
        self.stdout.write(f"Restored the {restored.engine} database ({counts}){key}.")
        for kept in restored.set_aside:
            self.stdout.write(f"What was there before is kept as {kept}.")
        if restored.settings:
            self.stdout.write(
                "The backup was made with these settings; set them again if they apply:"
            )
            for name, value in restored.settings.items():
                self.stdout.write(f"  {name}={value}")
        self.stdout.write(
            "Start the server as usual (`make run`); it migrates if the code is newer."
        )
