"""Settings come from the environment, refuse unsafe combinations, and the production profile is clean."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from orchestrator_site.conf import DEFAULTS, orchestrator_setting

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in {"DATABASE_URL", "SECRET_KEY", "DEBUG", "DJANGO_ENV", "ALLOWED_HOSTS"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env},
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_production_profile_passes_check_deploy_without_warnings():
    result = manage("check", "--deploy", "--fail-level", "WARNING",
                    DJANGO_ENV="production", SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="orch.example.org")

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_refuses_to_start_without_secret_key_when_debug_is_off():
    result = manage("check", DEBUG="false")

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_production_refuses_to_start_without_allowed_hosts():
    result = manage("check", DJANGO_ENV="production", SECRET_KEY=secrets.token_urlsafe(50))

    assert result.returncode != 0
    assert "ALLOWED_HOSTS is not set" in result.stderr


def test_without_database_url_the_default_is_sqlite_under_var(tmp_path):
    show = "from django.conf import settings; d = settings.DATABASES['default']; print(d['ENGINE'], d['NAME'])"
    result = manage("shell", "-v0", "-c", show, ORCHESTRATOR_VAR_DIR=str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", str(tmp_path / "orchestrator.sqlite3")]


def test_database_url_selects_postgresql():
    show = "from django.conf import settings; d = settings.DATABASES['default']; print(d['ENGINE'], d['HOST'])"
    result = manage("shell", "-v0", "-c", show, DATABASE_URL="postgres://postgres@db.example.org:5432/orch")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "db.example.org"]


def test_a_malformed_boolean_is_refused_with_its_name():
    result = manage("check", DEBUG="maybe")

    assert result.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in result.stderr


def test_orchestrator_settings_fall_back_to_documented_defaults():
    with override_settings(ORCHESTRATOR={}):
        assert orchestrator_setting("SYSTEM_ACTOR") == DEFAULTS["SYSTEM_ACTOR"]
    with override_settings(ORCHESTRATOR={"SYSTEM_ACTOR": "scheduler"}):
        assert orchestrator_setting("SYSTEM_ACTOR") == "scheduler"


def test_a_misspelt_orchestrator_setting_is_refused():
    with override_settings(ORCHESTRATOR={"SYSTEM_ACTR": "x"}), pytest.raises(ImproperlyConfigured, match="SYSTEM_ACTR"):
        orchestrator_setting("SYSTEM_ACTOR")


def test_requests_keep_their_database_connection_for_conn_max_age_seconds_checked_before_reuse():
    show = "from django.conf import settings; d = settings.DATABASES['default']; " \
           "print(d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS'])"

    assert manage("shell", "--no-imports", "-c", show).stdout.split() == ["60", "True"]
    assert manage("shell", "--no-imports", "-c", show, CONN_MAX_AGE="0").stdout.split() == ["0", "True"]
    refused = manage("check", CONN_MAX_AGE="forever")
    assert refused.returncode != 0
    assert "CONN_MAX_AGE='forever' is not a whole number of seconds" in refused.stderr


@pytest.mark.parametrize(("url", "shown"), [
    ("mysqlx://bob:s3cr3t-pw@db.example.org:3306/orch", "DATABASE_URL='mysqlx://bob:***@db.example.org:3306/orch'"),
    ("postgres://bob:s3cr3t-pw@db:port/orch", "DATABASE_URL='postgres://bob:***@db:port/orch'"),
    ("postgres://bob:s3cr3t-pw/orch", "DATABASE_URL='postgres://bob:***/orch'"),  # the host forgotten
], ids=["unknown-scheme", "malformed", "no-host"])
def test_a_database_url_that_cannot_be_used_is_shown_without_its_password(url, shown):
    result = manage("check", DATABASE_URL=url)

    assert result.returncode != 0
    assert "s3cr3t-pw" not in result.stdout + result.stderr
    assert f"{shown} cannot be used" in result.stderr


def test_a_unix_socket_given_as_host_in_the_query_is_the_connection_host():
    show = "from django.conf import settings; d = settings.DATABASES['default']; print(d['HOST'], d['NAME'])"
    result = manage("shell", "-v0", "-c", show, DATABASE_URL="postgres://postgres@/orch?host=/Work/Var%20Dir/postgres")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["/Work/Var Dir/postgres orch"]
