"""`manage.py unblock_api_address ADDRESS` or `--all`: lift the API's bad-token block before its window ends."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from subscriptions import token_throttle


class Command(BaseCommand):
    help = (
        "Forget the bad API tokens counted for a client address (or every address, --all), so that its "
        "requests with a token are checked again at once instead of answered 429."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("address", nargs="?", default=None, help="The client address, as the log names it.")
        parser.add_argument("--all", dest="every_address", action="store_true", help="Every address.")

    def handle(self, *args: Any, address: str | None, every_address: bool, **options: Any) -> None:
        if (address is None) == (not every_address):
            raise CommandError("give either an ADDRESS or --all")
        count = token_throttle.unblock(address)
        if address is not None and count == 0:
            raise CommandError(f"no bad API tokens are counted for {address!r}")
        self.stdout.write(self.style.SUCCESS(
            f"Forgot the bad API tokens of {address if address else f'{count} address(es)'}."))
