"""API authentication: knox's hashed tokens, refusing a client address that sent too many bad ones (429)."""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from hmac import compare_digest
from typing import Any

from django.db.models import Subquery
from django.utils import timezone
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS
from rest_framework import exceptions
from rest_framework.authentication import get_authorization_header
from rest_framework.request import Request

from orchestrator_site.client_address import client_address
from orchestrator_site.humanize import exact_time
from subscriptions import token_throttle

logger = logging.getLogger(__name__)

INVALID = "Invalid token."


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

    knox's own check is replaced (same tokens, same hash) to keep a request with a right token at one query:
    the token, its user and whether the address is refused, together. knox's also deletes every expired token
    of the user on each request; here an expired token is refused and stays listed as expired until revoked
    (`manage.py revoke_api_token --expired`).
    """

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.authenticate_header(request).encode().lower():
            return None  # no token: another authentication's business
        # A request without an address is not one from the web (the test client's request factory): all
        # such requests count as one client.
        address = client_address(request) or "unknown"
        try:
            return self._check(header, address)
        except TooManyBadTokens:
            raise
        except exceptions.AuthenticationFailed:
            wait = token_throttle.record_bad_token(address)
            logger.info("API: a bad token from %s (%s)", address, "now refused" if wait else "counted")
            raise

    def _check(self, header: list[bytes], address: str) -> tuple[Any, Any]:
        now = timezone.now()
        key = header[1].decode("utf-8", errors="replace") if len(header) == 2 else ""
        # The tokens whose key starts as this one does (knox's token_key), each with its user and with the
        # end of the address's block, if any: a request with a right token costs this one query.
        blocked_until = token_throttle.blocked_rows(address, now).values("blocked_until")[:1]
        candidates = [] if not key else list(
            AuthToken.objects.filter(token_key=key[:CONSTANTS.TOKEN_KEY_LENGTH]).select_related("user")
            .annotate(address_blocked_until=Subquery(blocked_until)))
        if candidates:
            until = candidates[0].address_blocked_until
            wait = 0 if until is None else max(1, math.ceil((until - now).total_seconds()))
        else:  # no such token: whether the address is refused takes a query of its own (bad keys only)
            wait = token_throttle.seconds_blocked(address)
        if wait:
            raise TooManyBadTokens(wait)
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header: give it as `Token <key>`.")
        digest = hash_token(key)
        for token in candidates:
            if compare_digest(digest, token.digest):
                if token.expiry is not None and token.expiry <= now:
                    raise exceptions.AuthenticationFailed("Token expired.")
                return self.validate_user(token)
        raise exceptions.AuthenticationFailed(INVALID)


class TokenAuthenticationScheme(KnoxTokenScheme):
    """The schema's description of TokenAuthentication: `Authorization: Token <key>`, named as it always was."""

    target_class = "subscriptions.api.authentication.TokenAuthentication"
    name = "tokenAuth"
