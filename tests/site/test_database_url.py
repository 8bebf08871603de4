"""A connection's settings as a DATABASE_URL for a subprocess, and URLs shown without their passwords."""

from __future__ import annotations

import dj_database_url
import pytest

from orchestrator_site.database_url import postgres_url, without_password


@pytest.mark.parametrize("settings_dict", [
    {"USER": "postgres", "PASSWORD": "", "HOST": "127.0.0.1", "PORT": "5432", "NAME": "test_orchestrator_gw0"},
    {"USER": "ops", "PASSWORD": "p@ss/w:rd", "HOST": "db.example.org", "PORT": 6432, "NAME": "orch"},
    {"USER": "postgres", "PASSWORD": "", "HOST": "/Work/Var Dir/postgres", "PORT": "", "NAME": "test_orchestrator"},
    {"USER": "postgres", "PASSWORD": "", "HOST": "/run/pg", "PORT": "5433", "NAME": "orch"},
], ids=["tcp", "password", "socket", "socket-port"])
def test_a_connections_url_reaches_the_same_database_when_parsed_again(settings_dict):
    parsed = dj_database_url.parse(postgres_url(settings_dict))
    host = parsed["HOST"] or parsed["OPTIONS"].get("host")
    port = str(parsed["PORT"] or parsed["OPTIONS"].get("port") or "")

    assert (parsed["USER"], parsed["PASSWORD"], host, parsed["NAME"]) == (
        settings_dict["USER"], settings_dict["PASSWORD"], settings_dict["HOST"], settings_dict["NAME"])
    assert port == str(settings_dict["PORT"] or "")


def test_a_connection_without_server_side_binding_keeps_it_off_in_its_url():
    url = postgres_url({"USER": "postgres", "HOST": "db", "PORT": "", "NAME": "orch",
                        "OPTIONS": {"server_side_binding": False}})

    assert url == "postgres://postgres@db:5432/orch?server_side_binding=false"


@pytest.mark.parametrize(("url", "shown"), [
    ("postgres://bob:secret@db:5432/orch", "postgres://bob:***@db:5432/orch"),
    ("postgres://bob:se@cr/et@db/orch", "postgres://bob:***@db/orch"),  # unescaped @ and / in the password
    ("bob:secret@db/orch", "bob:***@db/orch"),  # no scheme
    ("postgres://bob:secret/orch", "postgres://bob:***/orch"),  # the host forgotten: the password as a port
    ("postgres://bob@db:5432/orch", "postgres://bob@db:5432/orch"),
    ("postgres://db:5432/orch", "postgres://db:5432/orch"),
    ("sqlite:///var/orchestrator.sqlite3", "sqlite:///var/orchestrator.sqlite3"),
])
def test_a_url_is_shown_with_its_password_masked_and_the_rest_kept(url, shown):
    assert without_password(url) == shown
