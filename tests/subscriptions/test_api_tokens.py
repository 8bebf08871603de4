"""API tokens: stored as hashes, expiring, revocable; the commands that issue, list and revoke them; old plain keys."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from orchestrator_site.database_url import postgres_url
from subscriptions import api_tokens
from tests.factories import UserFactory, api_token

pytestmark = pytest.mark.django_db
URL = "/api/subscriptions/"


def get(key: str, url: str = URL):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get(url)


def rows_containing(text: str) -> list[str]:
    """Every table holding `text` anywhere in a row (each row as PostgreSQL writes it out as text)."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            quoted = connection.ops.quote_name(table)
            cursor.execute(f"SELECT count(*) FROM {quoted} AS t WHERE t::text LIKE %s", [f"%{text}%"])
            if cursor.fetchone()[0]:
                found.append(table)
    return found


def issue(*args: str) -> tuple[str, str]:
    """Run create_api_token; return its output and the key it printed."""
    out = StringIO()
    call_command("create_api_token", *args, stdout=out)
    output = out.getvalue()
    return output, re.search(r"Key: (\S+)", output).group(1)


# --- tokens ---------------------------------------------------------------------------------------------
@pytest.mark.requires_postgres
def test_the_key_is_nowhere_in_the_database_only_its_hash():
    user = UserFactory()
    key = api_token(user)

    assert rows_containing(key) == []
    assert rows_containing(key[:15]) == ["knox_authtoken"]  # the prefix that lists and revokes it
    assert get(key).status_code == 200


def test_a_token_expires_after_the_default_expiry_setting(settings):
    settings.ORCHESTRATOR = {"API_TOKEN_EXPIRY_DAYS": 30}
    before = timezone.now()

    issued = api_tokens.create_token(UserFactory().username)

    assert before + timedelta(days=30) <= issued.token.expiry <= timezone.now() + timedelta(days=30)


def test_an_expired_token_is_refused_with_401_and_a_token_challenge():
    key = api_token(expires_in=timedelta(days=1))
    assert get(key).status_code == 200
    AuthToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))

    response = get(key)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {"detail": "Token expired."}


def test_a_revoked_token_is_refused_with_401_at_once():
    key = api_token()
    assert get(key).status_code == 200

    api_tokens.revoke_token(key[:15])

    response = get(key)
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


def test_a_token_of_a_deactivated_user_is_refused():
    user = UserFactory()
    key = api_token(user)
    user.is_active = False
    user.save()

    assert get(key).status_code == 401


def test_a_wrong_key_with_a_right_prefix_is_refused():
    key = api_token()

    assert get(key[:15] + "0" * (len(key) - 15)).status_code == 401
    assert get(key[:15]).status_code == 401


def test_a_user_may_hold_several_tokens_and_revoking_one_leaves_the_others():
    user = UserFactory()
    first, second = api_token(user), api_token(user)

    api_tokens.revoke_token(first[:15])

    assert (get(first).status_code, get(second).status_code) == (401, 200)


# --- commands -------------------------------------------------------------------------------------------
def test_create_api_token_prints_the_key_once_and_says_it_cannot_be_shown_again():
    UserFactory(username="robot")

    output, key = issue("robot")

    assert "cannot be shown again" in output
    assert "Authorization: Token <key>" in output
    assert f"API token {key[:15]} issued for robot, expires: " in output
    assert get(key).status_code == 200
    token = AuthToken.objects.get()
    assert token.user.username == "robot"
    assert timedelta(days=89) < token.expiry - timezone.now() <= timedelta(days=90)


def test_create_api_token_takes_an_expiry_in_days_or_never():
    UserFactory(username="robot")

    output, never = issue("robot", "--expires-in", "never")
    assert "expires: never" in output
    _, week = issue("robot", "--expires-in", "7")

    expiries = {token.token_key: token.expiry for token in AuthToken.objects.all()}
    assert expiries[never[:15]] is None
    assert timedelta(days=6, hours=23) < expiries[week[:15]] - timezone.now() <= timedelta(days=7)


@pytest.mark.parametrize("value", ["0", "-3", "soon", "inf", "nan", "40000"])
def test_create_api_token_refuses_an_expiry_that_is_not_days_or_never(value):
    UserFactory(username="robot")

    with pytest.raises(CommandError, match=r"--expires-in .* is not a number of days"):
        call_command("create_api_token", "robot", "--expires-in", value)
    assert not AuthToken.objects.exists()


@pytest.mark.requires_postgres
def test_create_api_token_for_an_unknown_user_exits_1_with_one_line_and_no_traceback():
    env = {**os.environ, "DATABASE_URL": postgres_url(connection.settings_dict)}
    result = subprocess.run(
        [sys.executable, "manage.py", "create_api_token", "nobody"],
        cwd=Path(settings.BASE_DIR), env=env, capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "CommandError: there is no user 'nobody'"
    assert result.stdout == ""


def test_list_api_tokens_shows_prefix_user_dates_and_expired_but_never_a_key():
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    live = api_token(alice, expires_in=timedelta(days=3))
    old = api_token(bob, expires_in=timedelta(days=1))
    AuthToken.objects.filter(token_key=old[:15]).update(expiry=timezone.now() - timedelta(hours=1))
    never = api_tokens.create_token("bob", None).key

    out = StringIO()
    call_command("list_api_tokens", stdout=out)
    lines = out.getvalue().splitlines()

    assert lines[0].split() == ["PREFIX", "USER", "CREATED", "EXPIRES", "EXPIRED"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {live[:15], old[:15], never[:15]}
    assert rows[live[:15]].split()[1] == "alice" and rows[live[:15]].endswith(" no")
    assert rows[old[:15]].split()[1] == "bob" and rows[old[:15]].endswith(" yes")
    assert rows[never[:15]].split()[-2:] == ["never", "no"]
    for key in (live, old, never):
        assert key not in out.getvalue()

    out = StringIO()
    call_command("list_api_tokens", "--user", "alice", stdout=out)
    assert [line.split()[0] for line in out.getvalue().splitlines()[1:]] == [live[:15]]


def test_list_api_tokens_says_when_there_are_none_and_refuses_an_unknown_user():
    UserFactory(username="alice")
    out = StringIO()
    call_command("list_api_tokens", "--user", "alice", stdout=out)
    assert out.getvalue() == "No API tokens for alice.\n"

    with pytest.raises(CommandError, match="there is no user 'nobody'"):
        call_command("list_api_tokens", "--user", "nobody")


def test_revoke_api_token_by_prefix_then_the_key_is_refused():
    UserFactory(username="robot")
    _, key = issue("robot")

    out = StringIO()
    call_command("revoke_api_token", key[:15], stdout=out)

    assert out.getvalue() == f"Revoked API token {key[:15]} of robot.\n"
    assert get(key).status_code == 401
    assert not AuthToken.objects.exists()


def test_revoke_api_token_refuses_an_unknown_or_short_prefix_and_bad_arguments():
    key = api_token()

    with pytest.raises(CommandError, match="no API token has the prefix 'ffffffffffffff0'"):
        call_command("revoke_api_token", "ffffffffffffff0")
    with pytest.raises(CommandError, match="too short"):
        call_command("revoke_api_token", key[:6])
    with pytest.raises(CommandError, match="give one of"):
        call_command("revoke_api_token")
    with pytest.raises(CommandError, match="give one of"):
        call_command("revoke_api_token", key[:15], "--all", "--user", "x")
    with pytest.raises(CommandError, match="give one of"):
        call_command("revoke_api_token", "--user", "x")
    assert get(key).status_code == 200


def test_revoke_api_token_all_of_a_user_leaves_other_users_tokens():
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    alice_keys = [api_token(alice), api_token(alice)]
    bob_key = api_token(bob)

    out = StringIO()
    call_command("revoke_api_token", "--user", "alice", "--all", stdout=out)

    assert out.getvalue() == "Revoked 2 API token(s) of alice.\n"
    assert [get(key).status_code for key in alice_keys] == [401, 401]
    assert get(bob_key).status_code == 200
    with pytest.raises(CommandError, match="there is no user 'nobody'"):
        call_command("revoke_api_token", "--user", "nobody", "--all")


def test_revoke_api_token_expired_removes_only_expired_tokens():
    expired = api_token(expires_in=timedelta(days=1))
    AuthToken.objects.filter(token_key=expired[:15]).update(expiry=timezone.now() - timedelta(seconds=1))
    live = api_token()

    out = StringIO()
    call_command("revoke_api_token", "--expired", stdout=out)

    assert out.getvalue() == "Removed 1 expired API token(s).\n"
    assert list(AuthToken.objects.values_list("token_key", flat=True)) == [live[:15]]


# --- the plain tokens of earlier versions ---------------------------------------------------------------
PLAIN_TABLE_SQL = {
    "postgresql": 'CREATE TABLE "authtoken_token" ("key" varchar(40) NOT NULL PRIMARY KEY, '
                  '"created" timestamp with time zone NOT NULL, "user_id" integer NOT NULL UNIQUE)',
    "sqlite": 'CREATE TABLE "authtoken_token" ("key" varchar(40) NOT NULL PRIMARY KEY, '
              '"created" datetime NOT NULL, "user_id" integer NOT NULL UNIQUE)',
}


# Outside a test transaction: SQLite's schema editor (the migration drops the old table) must turn foreign keys
# off, which it cannot do inside one.
@pytest.mark.django_db(transaction=True)
def test_the_migration_hashes_each_plain_token_so_the_same_key_keeps_working_then_drops_the_plain_keys():
    """An upgrade from rest_framework.authtoken: its table as it was, two users' 40-character keys in it."""
    migration = importlib.import_module("subscriptions.migrations.0006_hash_plain_api_tokens")
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    plain = {alice: "0123456789abcdef0123456789abcdef01234567", bob: "fedcba9876543210fedcba9876543210fedcba98"}
    created = timezone.now() - timedelta(days=400)
    with connection.cursor() as cursor:
        cursor.execute(PLAIN_TABLE_SQL[connection.vendor])
        for user, key in plain.items():
            cursor.execute('INSERT INTO "authtoken_token" ("key", "created", "user_id") VALUES (%s, %s, %s)',
                           [key, created, user.pk])
        cursor.execute("INSERT INTO django_migrations (app, name, applied) VALUES ('authtoken', '0001_initial', %s)",
                       [created])

    with connection.schema_editor() as editor:
        migration.hash_plain_tokens(apps, editor)

    for user, key in plain.items():
        response = get(key, "/api/processes/")
        assert response.status_code == 200, user
    tokens = {token.user.username: token for token in AuthToken.objects.select_related("user")}
    assert set(tokens) == {"alice", "bob"}
    assert all(token.expiry is None and token.created == created for token in tokens.values())
    assert "authtoken_token" not in connection.introspection.table_names()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_migrations WHERE app = 'authtoken'")
        assert cursor.fetchone()[0] == 0
    if connection.vendor == "postgresql":
        assert rows_containing(plain[alice]) == [] and rows_containing(plain[bob]) == []


# Outside a test transaction: SQLite's schema editor (the migration drops the old table) must turn foreign keys
# off, which it cannot do inside one.
@pytest.mark.django_db(transaction=True)
def test_the_migration_does_nothing_on_a_database_that_never_had_plain_tokens():
    migration = importlib.import_module("subscriptions.migrations.0006_hash_plain_api_tokens")

    with connection.schema_editor() as editor:
        migration.hash_plain_tokens(apps, editor)

    assert not AuthToken.objects.exists()
