"""Who may read /metrics: a bearer token and/or an address allow-list (ORCHESTRATOR METRICS_TOKEN, METRICS_ALLOWED_IPS).

Neither set: only requests from this machine (loopback). A refused request gets 403 (address) or 401
(token) with a one-line reason, never the metrics. The token is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from django.core import checks
from django.http import HttpRequest

from orchestrator_site.conf import orchestrator_setting

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str
    headers: dict[str, str]


def allowed_networks() -> tuple[Network, ...]:
    """METRICS_ALLOWED_IPS as networks (an address is a network of one); ValueError names a bad entry."""
    raw: Any = orchestrator_setting("METRICS_ALLOWED_IPS") or ()
    if isinstance(raw, str):  # "10.0.0.0/8, ::1" instead of a tuple: meant as a list, not as its characters
        raw = raw.split(",")
    networks = []
    for entry in raw:
        text = str(entry).strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or network") from None
    return tuple(networks)


def _token() -> str:
    return str(orchestrator_setting("METRICS_TOKEN") or "").strip()


def _client_address(request: HttpRequest) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # The connection's own address, never X-Forwarded-For: any client can write that header.
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", "").strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 from a dual-stack socket is 127.0.0.1
    return address


def _same(given: str, expected: str) -> bool:
    # Digests of equal length: the comparison's time says nothing of the token, not even its length.
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


def refusal(request: HttpRequest) -> Refusal | None:
    """Why this request may not read the metrics, or None when it may."""
    token = _token()
    try:
        networks = allowed_networks()
    except ValueError as exc:
        # Fail closed: a typo in the allow-list must not open the metrics to everyone.
        logger.error("metrics: ORCHESTRATOR['METRICS_ALLOWED_IPS'] is invalid: %s", exc)
        return Refusal(403, f"metrics: refused: METRICS_ALLOWED_IPS is invalid ({exc})", {})
    if not networks and not token:
        networks = LOOPBACK
    if networks:
        address = _client_address(request)
        if address is None or not any(address in network for network in networks):
            return Refusal(403, f"metrics: refused: address {request.META.get('REMOTE_ADDR', '?')} is not allowed",
                           {})
    if token:
        scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="metrics"'}
        if scheme.lower() != "bearer" or not given.strip():
            return Refusal(401, "metrics: refused: a bearer token is required (Authorization: Bearer <token>)",
                           challenge)
        if not _same(given.strip(), token):
            return Refusal(401, "metrics: refused: wrong token", challenge)
    return None


@checks.register()
def check_metrics_allowed_ips(**kwargs: Any) -> list[checks.CheckMessage]:
    """`manage.py check` names a bad METRICS_ALLOWED_IPS entry (/metrics refuses everyone until it is fixed)."""
    try:
        allowed_networks()
    except ValueError as exc:
        return [checks.Error(f"ORCHESTRATOR['METRICS_ALLOWED_IPS']: {exc}",
                             hint='Give addresses or CIDR networks, e.g. ("10.0.0.0/8", "::1").',
                             id="processes.E111")]
    return []
