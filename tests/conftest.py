"""Suite-wide fixtures and the PostgreSQL-only marker (skipped on SQLite, but never silently in CI).

`make test` runs on PostgreSQL (DATABASE_URL, else an embedded server); only a DATABASE_URL chosen to be
SQLite skips these tests, and CI's SQLite run deselects them (-m "not requires_postgres") instead.
"""

from __future__ import annotations

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
