"""The client's address, for throttles and lock-outs: X-Forwarded-For only as far as trusted proxies vouch for it."""

from __future__ import annotations

import ipaddress
import logging

from django.http import HttpRequest

from orchestrator_site.conf import orchestrator_setting

logger = logging.getLogger(__name__)

# Longer is not an address (a log line quotes at most this much of a bad one).
MAX_LENGTH = 64


def _address(value: str) -> str | None:
    """The value as an IP address in its canonical form; None when it is not one."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def client_address(request: HttpRequest) -> str | None:
    """The address of the client behind the request; None when the request has none (not one from the web).

    With ORCHESTRATOR["TRUSTED_PROXY_COUNT"] = 0 (the default), the connection's address (REMOTE_ADDR): any
    client can write X-Forwarded-For, so trusting it would let one client pose as many and escape its
    throttle. With N proxies in front of the app, each appending the address it saw to X-Forwarded-For, the
    N-th entry from the right is the one the outermost proxy saw: entries further left were written by the
    client. A header with fewer entries (a request that bypassed a proxy) falls back to REMOTE_ADDR.
    """
    # A DRF Request wraps the Django one; META is the same either way.
    meta = request.META
    remote = _address(meta.get("REMOTE_ADDR", ""))
    proxies = int(orchestrator_setting("TRUSTED_PROXY_COUNT"))
    if proxies <= 0:
        return remote
    forwarded = [entry for entry in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if entry.strip()]
    if len(forwarded) < proxies:
        return remote
    chosen = _address(forwarded[-proxies])
    if chosen is None:
        logger.warning("X-Forwarded-For entry %r is not an address; using the connection's address",
                       forwarded[-proxies][:MAX_LENGTH])
        return remote
    return chosen
