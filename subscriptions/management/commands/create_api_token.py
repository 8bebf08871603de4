"""`manage.py create_api_token USERNAME [--expires-in DAYS|never]`: issue an API token and print its key, once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from subscriptions import api_tokens
from subscriptions.management.commands._api_tokens import command_errors, expiry_text


class Command(BaseCommand):
    help = (
        "Issue an API token for a user and print its key. Only a hash of the key is kept: it cannot be shown "
        "again. Clients send it as `Authorization: Token <key>`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="The user the token authenticates as.")
        parser.add_argument(
            "--expires-in", metavar="DAYS|never", default=None,
            help="Days until the token expires, or 'never' (default: ORCHESTRATOR['API_TOKEN_EXPIRY_DAYS'], 90).",
        )

    def handle(self, *args: Any, username: str, expires_in: str | None, **options: Any) -> None:
        with command_errors():
            if expires_in is None:
                issued = api_tokens.create_token(username)
            else:
                issued = api_tokens.create_token(username, api_tokens.parse_expires_in(expires_in))
        token = issued.token
        self.stdout.write(self.style.SUCCESS(
            f"API token {token.token_key} issued for {username}, expires: {expiry_text(token.expiry)}."))
        self.stdout.write(f"  Key: {issued.key}")
        self.stdout.write("  Keep it now: it cannot be shown again (only a hash of it is stored). "
                          "Send it as `Authorization: Token <key>`.")
