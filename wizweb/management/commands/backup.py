"""`manage.py backup PATH`: a consistent copy of the database and the secret key, while the
server runs (see wizweb.backup)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from wizweb.backup import BackupError, backup_write


class Command(BaseCommand):
    help = "Write a backup (database and secret key) to a new file, while the server runs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="The file to write, e.g. wiz-2026-01-31.tar.gz")

    def handle(self, *args: Any, path: Path, **options: Any) -> None:
        try:
            manifest = backup_write(path=path.expanduser().absolute())
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        key = "and the secret key " if manifest["secret_key"] else ""
        self.stdout.write(f"Backed up the {manifest['engine']} database {key}to {path}.")
