"""`manage.py demo_login`: make sure a staff login exists for the demo and print it, with a new password."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create (or reset) a superuser for trying the app locally and print its login. "
        "The password is new and random on every run: never a fixed one."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="admin", help="Login name (default: admin).")
        parser.add_argument("--url", default="http://127.0.0.1:8000/admin/",
                            help="Where the admin will be served, to print (make run passes its HOST and PORT).")

    def handle(self, *args: Any, username: str, url: str, **options: Any) -> None:
        password = secrets.token_urlsafe(12)
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"email": f"{username}@localhost"}
        )
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.set_password(password)
        user.save()
        action = "Created" if created else "Reset the password of"
        self.stdout.write(self.style.SUCCESS(f"{action} staff user {username!r}."))
        self.stdout.write(f"  Log in at {url} as  {username} / {password}")
