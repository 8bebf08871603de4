"""`manage.py revoke_api_token PREFIX`, `--user USERNAME --all` or `--expired`: revoke API tokens (then 401)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from subscriptions import api_tokens
from subscriptions.management.commands._api_tokens import command_errors


class Command(BaseCommand):
    help = (
        "Revoke an API token by its prefix (as list_api_tokens shows it), or every token of a user "
        "(--user USERNAME --all), or remove the expired ones (--expired). A revoked token is deleted: requests "
        "with it are answered 401 at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", nargs="?", default=None, help="The token's prefix (or its whole key).")
        parser.add_argument("--user", metavar="USERNAME", default=None, help="With --all: whose tokens.")
        parser.add_argument("--all", dest="all_of_user", action="store_true", help="Revoke every token of --user.")
        parser.add_argument("--expired", action="store_true", help="Remove every expired token.")

    def handle(self, *args: Any, prefix: str | None, user: str | None, all_of_user: bool, expired: bool,
               **options: Any) -> None:
        by_prefix = prefix is not None and user is None and not all_of_user and not expired
        by_user = prefix is None and user is not None and all_of_user and not expired
        only_expired = expired and prefix is None and user is None and not all_of_user
        if not (by_prefix or by_user or only_expired):
            raise CommandError("give one of: a token's PREFIX, --user USERNAME --all, or --expired")
        if only_expired:
            count = api_tokens.revoke_expired_tokens()
            self.stdout.write(self.style.SUCCESS(f"Removed {count} expired API token(s)."))
            return
        with command_errors():
            if prefix is not None:
                token = api_tokens.revoke_token(prefix)
                self.stdout.write(self.style.SUCCESS(
                    f"Revoked API token {token.token_key} of {token.user.get_username()}."))
                return
            count = api_tokens.revoke_user_tokens(user)
        self.stdout.write(self.style.SUCCESS(f"Revoked {count} API token(s) of {user}."))
