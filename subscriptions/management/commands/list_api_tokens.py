"""`manage.py list_api_tokens [--user USERNAME]`: every API token (prefix, user, created, expiry), never a key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from orchestrator_site.humanize import exact_time
from subscriptions import api_tokens
from subscriptions.management.commands._api_tokens import command_errors, expiry_text


class Command(BaseCommand):
    help = "List the API tokens, newest first: prefix (for revoke_api_token), user, created, expiry, expired."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", metavar="USERNAME", default=None, help="Only this user's tokens.")

    def handle(self, *args: Any, user: str | None, **options: Any) -> None:
        with command_errors():
            tokens = api_tokens.list_tokens(user)
        if not tokens:
            self.stdout.write(f"No API tokens{f' for {user}' if user else ''}.")
            return
        now = timezone.now()
        rows = [("PREFIX", "USER", "CREATED", "EXPIRES", "EXPIRED")]
        rows += [(token.token_key, token.user.get_username(), exact_time(token.created), expiry_text(token.expiry),
                  "yes" if api_tokens.is_expired(token, now) else "no") for token in tokens]
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
