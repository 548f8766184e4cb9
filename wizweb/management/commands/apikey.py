"""`manage.py apikey create USERNAME | list [USERNAME] | revoke ID`: API keys from the shell."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from wizweb.apikeys import apikey_create, apikey_revoke
from wizweb.models import ApiKey


class Command(BaseCommand):
    help = "Create, list or revoke API keys."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="Print a new key for a user (shown once).")
        create.add_argument("username")
        create.add_argument("--name", default="command line")
        create.add_argument(
            "--keep-history", action="store_true", help="Keep its conversations in history."
        )
        listing = actions.add_parser("list", help="List keys (of one user).")
        listing.add_argument("username", nargs="?")
        revoke = actions.add_parser("revoke", help="Revoke a key by its id.")
        revoke.add_argument("id", type=int)

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "create":
            user = get_user_model().objects.filter(username=options["username"]).first()
            if user is None:
                raise CommandError(f"There is no user named {options['username']!r}.")
            created = apikey_create(
                user=user, name=options["name"], keep_history=options["keep_history"]
            )
            self.stdout.write(created.secret)
        elif action == "list":
            keys = ApiKey.objects.select_related("user")
            if options["username"]:
                keys = keys.filter(user__username=options["username"])
            for key in keys:
                state = "active" if key.is_active else "revoked"
                self.stdout.write(
                    f"{key.pk}\t{key.user.username}\t{key.name}\t{key.prefix}…\t{state}"
                )
        else:
            updated = ApiKey.objects.filter(pk=options["id"], revoked_at=None)
            if not updated.exists():
                raise CommandError(f"There is no active key with id {options['id']}.")
            key = updated.get()
            apikey_revoke(user=key.user, key_id=key.pk)
            self.stdout.write(f"Revoked key {key.pk} ({key.name}).")
