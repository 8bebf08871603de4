"""Suite-wide fixtures and the PostgreSQL-only marker (skipped on SQLite, but never silently in CI).

`make test` runs on PostgreSQL (DATABASE_URL, else an embedded server); only a DATABASE_URL chosen to be
SQLite skips these tests, and CI's SQLite run deselects them (-m "not requires_postgres") instead.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.config
import os

import pytest
from django.db import connection


def _on_postgres() -> bool:
    return connection.vendor == "postgresql"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("requires_postgres") is None or _on_postgres():
        return
    reason = (
        f"{item.nodeid} needs PostgreSQL (row locks and real concurrency), but the database is "
        f"{connection.vendor}; run `make test` without DATABASE_URL (an embedded PostgreSQL) or with "
        f"DATABASE_URL=postgres://..., or leave these out on SQLite: -m 'not requires_postgres'"
    )
    if os.environ.get("CI", "").lower() == "true":
        # In CI a skipped PostgreSQL test would hide an untested guarantee: fail instead.
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # The production hasher is slow on purpose; tests create many users and need no protection.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff_user(db):
    from tests.factories import UserFactory

    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def api(db):
    """An API client authenticated as a plain user (a module may define its own `api` for other rights)."""
    from rest_framework.test import APIClient

    from tests.factories import UserFactory

    client = APIClient()
    client.force_authenticate(UserFactory())
    return client


@pytest.fixture
def staff_api(staff_user):
    """An API client authenticated as a staff superuser."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(staff_user)
    return client


def pytest_report_header(config: pytest.Config) -> str:
    from django.conf import settings

    db = settings.DATABASES["default"]
    return f"database: {db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}"


class JsonLogCapture(logging.Handler):
    """A handler as settings.LOGGING makes the console's (its context filter, its JSON formatter), keeping the
    lines it formats, parsed, each with the name of the thread that logged it (`thread`)."""

    def __init__(self) -> None:
        from django.conf import settings

        super().__init__()
        config = logging.config.DictConfigurator(copy.deepcopy(settings.LOGGING))
        self.addFilter(config.configure_filter(config.config["filters"]["context"]))
        self.setFormatter(config.configure_formatter(config.config["formatters"]["json"]))
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append({**json.loads(self.format(record)), "thread": record.threadName})

    def about(self, text: str) -> list[dict]:
        """The lines whose message contains `text`."""
        return [line for line in self.lines if text in line["message"]]


@pytest.fixture
def json_log():
    """Every line logged during the test (any logger reaching the root), as the JSON format writes it."""
    handler = JsonLogCapture()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
