"""Logs as a process writes them to stderr: each line once, plain or JSON (LOG_FORMAT), with the request's id."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Loggers of every kind: Django's (which has handlers of its own by default), the development server's, ours,
# and a third party's.
LOGGERS = ["django.request", "django.server", "django.db.backends", "processes.engine", "urllib3"]
SAY_ONCE_EACH = "import logging\n" + "\n".join(
    f"logging.getLogger({name!r}).warning('marker from {name}')" for name in LOGGERS
)


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `args` with Python as `make run` does (development, DEBUG on), in an environment of its own."""
    clean = {k: v for k, v in os.environ.items()
             if k not in {"DATABASE_URL", "SECRET_KEY", "DEBUG", "DJANGO_ENV", "ALLOWED_HOSTS", "LOG_FORMAT",
                          "LOG_LEVEL"}}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**clean, "DEBUG": "true", "ORCHESTRATOR_VAR_DIR": str(tmp_path), **env},
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_in_development_every_line_is_printed_once(tmp_path, log_format):
    result = run(["manage.py", "shell", "-v0", "-c", SAY_ONCE_EACH], tmp_path, LOG_FORMAT=log_format)

    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == len(LOGGERS), result.stderr
    for name, line in zip(LOGGERS, lines, strict=True):
        assert sum(f"marker from {name}" in line for line in lines) == 1, result.stderr
        if log_format == "plain":
            assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} WARNING {re.escape(name)}: marker from "
                                rf"{re.escape(name)}", line), line
        else:
            assert json.loads(line)["logger"] == name


def test_plain_lines_show_the_context_when_there_is_one(tmp_path):
    script = ("import logging\nfrom orchestrator_site import logcontext\n"
              "logcontext.bind_request_id('req-1'); logcontext.bind_process('p-1')\n"
              "logcontext.bind_step('wf', 'Write A')\n"
              "logging.getLogger('processes.engine').info('with context')")
    result = run(["manage.py", "shell", "-v0", "-c", script], tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0].endswith(
        ' INFO processes.engine: with context [request_id=req-1 process_id=p-1 workflow=wf step="Write A"]'
    )


def test_a_bad_log_format_or_level_is_refused_with_its_name(tmp_path):
    result = run(["manage.py", "check"], tmp_path, LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT='xml' is not one of: plain, json" in result.stderr

    result = run(["manage.py", "check"], tmp_path, LOG_LEVEL="loud")
    assert result.returncode != 0
    assert "LOG_LEVEL='loud' is not one of" in result.stderr


def test_log_level_is_read_in_any_case_and_django_lines_below_it_are_not_written(tmp_path):
    result = run(["manage.py", "shell", "-v0", "-c", SAY_ONCE_EACH.replace(".warning(", ".info(")], tmp_path,
                 LOG_LEVEL="warn")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_json_logs_of_requests_to_the_development_server_carry_the_id_each_answer_echoed(tmp_path):
    sent = {"kept": "trace-42.Abc_x:1", "missing": None, "huge": "a" * 10_000, "spaced": "two words"}
    result = run(["-m", "tests.site.log_server", json.dumps(sent)], tmp_path, LOG_FORMAT="json")

    assert result.returncode == 0, result.stderr
    answered = json.loads(result.stdout)
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line is one JSON object
    assert answered["kept"] == "trace-42.Abc_x:1"
    for name in ("missing", "huge", "spaced"):
        assert re.fullmatch(r"[0-9a-f]{32}", answered[name]), answered
    assert len(set(answered.values())) == len(sent)
    for name, request_id in answered.items():
        # Django's "Not Found" (logged after the middleware) and the server's request line (later still).
        about = [(line["logger"], line["message"]) for line in lines if line.get("request_id") == request_id]
        assert [logger for logger, _ in about] == ["django.request", "django.server"], lines
        assert about[0][1] == f"Not Found: /no-such-page/{name}/"
        assert re.fullmatch(rf'"GET /no-such-page/{name}/ HTTP/1.1" 404 \d+', about[1][1])
    assert all(line.get("request_id") in answered.values() for line in lines), lines
    for line in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
        assert line["level"] == "WARNING" and line["status_code"] == 404
        assert set(line) == {"time", "level", "logger", "message", "status_code", "request_id"}
