"""API authentication: knox's hashed tokens, refusing a client address that sent too many bad ones (429)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.utils import timezone
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework import exceptions
from rest_framework.authentication import get_authorization_header
from rest_framework.request import Request

from orchestrator_site.client_address import client_address
from orchestrator_site.humanize import exact_time
from subscriptions import token_throttle

logger = logging.getLogger(__name__)


class TooManyBadTokens(exceptions.Throttled):
    """429: the client's address sent too many bad tokens; DRF adds Retry-After from `wait`."""

    def __init__(self, wait: int) -> None:
        try_again_at = exact_time(timezone.now() + timedelta(seconds=wait))
        detail = (f"too many requests with a wrong, expired or revoked API token from this address: "
                  f"try again in {wait} s (at {try_again_at})")
        super().__init__(wait=wait, detail=detail)
        # Throttled appends "Expected available in N seconds." to the detail: ours says it already.
        self.detail = exceptions.ErrorDetail(detail, code=self.default_code)


class TokenAuthentication(KnoxTokenAuthentication):
    """`Authorization: Token <key>` with knox's tokens, throttled per client address.

    Only requests that carry a token are checked and counted: a session (the admin's pages) or an anonymous
    request is never refused here, whatever its address sent. While an address is refused, its tokens are
    not even checked, right ones included: else the answer (429 or not) would tell a guesser a right key.
    """

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.authenticate_header(request).encode().lower():
            return None
        address = client_address(request)
        wait = token_throttle.seconds_blocked(address)
        if wait:
            raise TooManyBadTokens(wait)
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            wait = token_throttle.record_bad_token(address)
            logger.info("API: a bad token from %s (%s)", address, "now refused" if wait else "counted")
            raise
