"""Callback tokens are masked on every log line, whoever logs the URL (runserver, Django's 4xx lines, our own)."""

from __future__ import annotations

import logging

import pytest

from orchestrator_site.logredact import RedactFilter, redact


@pytest.mark.parametrize(("text", "masked"), [
    ('"POST /api/processes/9a2e/callback/tOk-en_1/ HTTP/1.1" 404',
     '"POST /api/processes/9a2e/callback/***/ HTTP/1.1" 404'),
    ("Not Found: /api/processes/9a2e/callback/abc/progress/", "Not Found: /api/processes/9a2e/callback/***/progress/"),
    ("/callback/abc?x=1 and /callback/def", "/callback/***?x=1 and /callback/***"),
    ("nothing to hide here", "nothing to hide here"),
])
def test_callback_tokens_in_paths_are_masked(text, masked):
    assert redact(text) == masked


def test_the_filter_masks_a_record_formatted_with_its_arguments_and_keeps_it():
    record = logging.LogRecord("django.server", logging.INFO, __file__, 1, '"%s" %s %s',
                               ("POST /api/processes/1/callback/s3cret/ HTTP/1.1", "409", "52"), None)

    assert RedactFilter().filter(record) is True
    assert record.getMessage() == '"POST /api/processes/1/callback/***/ HTTP/1.1" 409 52'
    assert "s3cret" not in record.getMessage()


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_a_process_logging_a_callback_url_writes_it_masked(tmp_path, log_format):
    # The real LOGGING configuration, in a process of its own (as `make run` writes its lines).
    from tests.site.test_logs import run

    said = ("import logging\n"
            "logging.getLogger('django.request').warning('Not Found: %s', '/api/processes/1/callback/s3cretT0ken/')\n"
            "logging.getLogger('django.server').info('\"POST /api/processes/1/callback/s3cretT0ken/ HTTP/1.1\" 200 9')")
    result = run(["manage.py", "shell", "-v0", "-c", said], tmp_path, LOG_FORMAT=log_format)

    assert result.returncode == 0, result.stderr
    assert "s3cretT0ken" not in result.stderr
    assert result.stderr.count("/api/processes/1/callback/***/") == 2, result.stderr
