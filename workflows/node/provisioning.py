"""A stand-in for the provisioning system that deploys node configurations: it answers callbacks over HTTP."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from orchestrator_site.conf import orchestrator_setting

logger = logging.getLogger(__name__)

# ORCHESTRATOR["NODE_PROVISIONING"]: "" is off (create_node skips its deploy step), "http" is this stand-in.
OFF = ""
HTTP = "http"

# How often one POST is tried, and the wait before the second try (doubled after each; a Retry-After
# header, up to RETRY_AFTER_MAX_SECONDS, takes its place).
POST_TRIES = 5
POST_BACKOFF_SECONDS = 0.5
RETRY_AFTER_MAX_SECONDS = 5.0
POST_TIMEOUT_SECONDS = 10.0
# 503: a step holds the process (the one that asked may still be committing): the same call succeeds
# shortly. Any other answer is final: 404 (unknown token), 409 (used, closed, late), 400.
RETRY_STATUSES = frozenset({503})

# The token in a callback URL is a credential: never written to the log.
_TOKEN = re.compile(r"(/callback/)[^/]+")

# No proxy: the stand-in calls back the orchestrator it runs in (CALLBACK_BASE_URL).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def mode() -> str:
    """The configured mode, OFF or HTTP; any other value is refused by name."""
    value = str(orchestrator_setting("NODE_PROVISIONING") or "").strip().lower()
    if value not in (OFF, HTTP):
        raise ImproperlyConfigured(
            f"ORCHESTRATOR NODE_PROVISIONING={value!r} is not a provisioning mode: use \"\" (off) or \"http\""
        )
    return value


def enabled() -> bool:
    return mode() != OFF


def render_configuration(node_name: str) -> list[str]:
    """The configuration the stand-in "deploys": a few lines, the same for the same node."""
    return [
        f"hostname {node_name}",
        "interface lo0",
        f" description loopback of {node_name}",
        "router ospf 1",
        " passive-interface lo0",
        "ntp server 10.0.0.1",
        "end",
    ]


def request_deploy(node_name: str, callback_url: str, progress_url: str) -> None:
    """Ask the stand-in to deploy `node_name`'s configuration and call back on `callback_url`.

    A daemon thread does the work once the caller's transaction (the callback step's) commits: a step that
    rolls back asks for nothing, and the answer never races the commit that makes its token known. After
    NODE_PROVISIONING_DELAY_SECONDS it has POSTed one progress message (halfway) and its answer
    `{"ok": true, "device": ..., "config_lines": ...}`. Failures are logged, never raised into the app.
    """
    if mode() != HTTP:
        raise ImproperlyConfigured("the node provisioning stand-in is off (ORCHESTRATOR NODE_PROVISIONING is \"\"): "
                                   "nothing would answer this callback")
    delay = max(float(orchestrator_setting("NODE_PROVISIONING_DELAY_SECONDS")), 0.0)
    worker = threading.Thread(target=_deploy, args=(node_name, callback_url, progress_url, delay),
                              name=f"node-provisioning-{node_name}", daemon=True)
    transaction.on_commit(worker.start)
    logger.info("provisioning stand-in: deploy of %s requested; answer in %.1f s", node_name, delay)


def _deploy(node_name: str, callback_url: str, progress_url: str, delay: float) -> None:
    try:
        time.sleep(delay / 2)
        _post(progress_url, {"message": f"rendering configuration for {node_name}"}, what=f"progress of {node_name}")
        lines = render_configuration(node_name)
        time.sleep(delay / 2)
        _post(callback_url, {"ok": True, "device": node_name, "config_lines": len(lines)},
              what=f"answer for {node_name}")
    except Exception:  # a thread of the app's process: whatever happens here stays here
        logger.exception("provisioning stand-in: the deploy of %s failed", node_name)


def _post(url: str, body: dict[str, Any], *, what: str) -> bool:
    """POST `body` as JSON to `url`, trying again after a connection error or a 503; whether it was taken."""
    shown = redact(url)
    data = json.dumps(body).encode()
    for attempt in range(1, POST_TRIES + 1):
        wait = POST_BACKOFF_SECONDS * 2 ** (attempt - 1)
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with _OPENER.open(request, timeout=POST_TIMEOUT_SECONDS) as response:
                response.read()
                logger.info("provisioning stand-in: %s taken by %s (%s)", what, shown, response.status)
                return True
        except urllib.error.HTTPError as exc:
            detail = _detail(exc)
            if exc.code not in RETRY_STATUSES:
                logger.error("provisioning stand-in: %s refused by %s: %s %s", what, shown, exc.code, detail)
                return False
            logger.warning("provisioning stand-in: %s got %s from %s (try %d of %d): %s", what, exc.code, shown,
                           attempt, POST_TRIES, detail)
            wait = _retry_after(exc, wait)
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out
            logger.warning("provisioning stand-in: could not reach %s with the %s (try %d of %d): %s", shown, what,
                           attempt, POST_TRIES, getattr(exc, "reason", exc))
        if attempt < POST_TRIES:
            time.sleep(wait)
    logger.error("provisioning stand-in: gave up on the %s after %d tries", what, POST_TRIES)
    return False


def redact(url: str) -> str:
    """`url` without its callback token."""
    return _TOKEN.sub(r"\1…", url)


def _retry_after(exc: urllib.error.HTTPError, default: float) -> float:
    try:
        return min(max(float(exc.headers.get("Retry-After", "")), 0.0), RETRY_AFTER_MAX_SECONDS)
    except (TypeError, ValueError):  # absent, or an HTTP date
        return default


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read(2000)
    except OSError:
        return ""
    try:
        return str(json.loads(raw).get("detail", ""))
    except (ValueError, AttributeError):
        return raw.decode(errors="replace")
