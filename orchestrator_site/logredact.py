"""Secrets kept out of log lines: the callback token in a callback URL's path, whoever logs the URL."""

from __future__ import annotations

import logging
import re

# POST /api/processes/{id}/callback/{token}/ (and .../progress/): the token in the path is the only credential of
# an external system's answer (processes/api/callback_views.py). The request line reaches the logs of gunicorn
# (its access log), of runserver (django.server) and of Django's 4xx warnings (django.request): each would hand
# the token to whoever reads the logs.
_CALLBACK_TOKEN = re.compile(r"(/callback/)[^/\s?#\"']+")
MASK = "***"


def redact(text: str) -> str:
    """`text` with every callback token in a URL path replaced by ***."""
    return _CALLBACK_TOKEN.sub(rf"\g<1>{MASK}", text) if "/callback/" in text else text


class RedactFilter(logging.Filter):
    """Masks callback tokens in a record's message (formatted with its arguments first); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "/callback/" not in record.msg and not record.args:
            return True
        message = record.getMessage()
        if "/callback/" in message:
            record.msg, record.args = redact(message), None
        return True
