"""API tokens: issue, list and revoke them (knox stores a hash of each key, never the key itself).

The manage.py commands create_api_token, list_api_tokens and revoke_api_token call these; so do the tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from knox.models import AuthToken
from knox.settings import CONSTANTS

from orchestrator_site.conf import orchestrator_setting
from orchestrator_site.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)

# How many characters of a key identify its token in lists and when revoking (knox's token_key).
PREFIX_LENGTH = CONSTANTS.TOKEN_KEY_LENGTH


class DEFAULT_EXPIRY:
    """Marker: the expiry ORCHESTRATOR["API_TOKEN_EXPIRY_DAYS"] says."""


class UnknownUser(NotFound):
    default_detail = "There is no such user."


class UnknownToken(NotFound):
    default_detail = "No API token has this prefix."


@dataclass(frozen=True)
class IssuedToken:
    """A new token: `key` is what the client sends, shown this once; only its hash is kept."""

    key: str
    token: AuthToken


def default_expires_in() -> timedelta:
    return timedelta(days=float(orchestrator_setting("API_TOKEN_EXPIRY_DAYS")))


def _user(username: str) -> object:
    try:
        return get_user_model().objects.get_by_natural_key(username)
    except get_user_model().DoesNotExist:
        raise UnknownUser(f"there is no user {username!r}") from None


def parse_expires_in(value: str) -> timedelta | None:
    """`--expires-in`: a number of days (more than 0), or "never" (None)."""
    if value.strip().lower() == "never":
        return None
    try:
        days = float(value)
    except ValueError:
        days = 0.0
    if not days > 0 or days > 36500:
        raise InvalidInput(f"--expires-in {value!r} is not a number of days (more than 0, at most 36500) "
                           f"nor \"never\"")
    return timedelta(days=days)


def create_token(username: str, expires_in: timedelta | type[DEFAULT_EXPIRY] | None = DEFAULT_EXPIRY,
                 ) -> IssuedToken:
    """Issue a token for the user, expiring after `expires_in` (None: never; default: API_TOKEN_EXPIRY_DAYS)."""
    user = _user(username)
    if expires_in is DEFAULT_EXPIRY:
        expires_in = default_expires_in()
    token, key = AuthToken.objects.create(user=user, expiry=expires_in)
    logger.info("API token %s issued for %s, expiring %s", token.token_key, username,
                token.expiry.isoformat() if token.expiry else "never")
    return IssuedToken(key=key, token=token)


def list_tokens(username: str | None = None) -> list[AuthToken]:
    """Every token (of one user), the newest first, with its user; expired ones too, until removed."""
    tokens = AuthToken.objects.select_related("user").order_by("-created", "token_key")
    if username is not None:
        tokens = tokens.filter(user=_user(username))
    return list(tokens)


def is_expired(token: AuthToken, now: datetime | None = None) -> bool:
    return token.expiry is not None and token.expiry <= (now or timezone.now())


def revoke_token(prefix: str) -> AuthToken:
    """Revoke (delete) the token whose key starts with `prefix` (its first PREFIX_LENGTH characters, as listed).

    A whole key is accepted too. Refused when no token, or more than one, has that prefix.
    """
    prefix = prefix.strip()
    if len(prefix) < PREFIX_LENGTH:
        raise InvalidInput(f"{prefix!r} is too short: give the token's prefix as list_api_tokens shows it "
                           f"({PREFIX_LENGTH} characters)")
    with transaction.atomic():
        tokens = list(AuthToken.objects.select_for_update().select_related("user")
                      .filter(token_key=prefix[:PREFIX_LENGTH]))
        if not tokens:
            raise UnknownToken(f"no API token has the prefix {prefix[:PREFIX_LENGTH]!r}; "
                               f"list_api_tokens shows the tokens there are")
        if len(tokens) > 1:
            raise InvalidInput(f"{len(tokens)} API tokens have the prefix {prefix[:PREFIX_LENGTH]!r}; "
                               f"revoke them with --user USERNAME --all")
        (token,) = tokens
        token.delete()
    logger.info("API token %s of %s revoked", token.token_key, token.user.get_username())
    return token


def revoke_user_tokens(username: str) -> int:
    """Revoke every token of the user; return how many there were."""
    user = _user(username)
    deleted, _ = AuthToken.objects.filter(user=user).delete()
    logger.info("%d API token(s) of %s revoked", deleted, username)
    return deleted


def revoke_expired_tokens() -> int:
    """Delete every expired token (refused anyway; kept until now so that lists show them); return how many."""
    deleted, _ = AuthToken.objects.filter(expiry__lte=timezone.now()).delete()
    logger.info("%d expired API token(s) removed", deleted)
    return deleted
