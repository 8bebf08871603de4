"""Admin login lock-out (django-axes): the backend that counts web logins only, and the page a locked-out login gets."""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_username, get_cool_off
from django.db.models import Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from orchestrator_site.humanize import exact_time, relative_time

logger = logging.getLogger(__name__)

STATUS = 429


class WebLoginLockoutBackend(AxesStandaloneBackend):
    """axes' check that refuses a locked-out login, for logins over the web only.

    axes refuses any authenticate() without a request (it cannot tell who is asking). Logins without one are
    the test client's login(), the shell and scripts: code already trusted with the database, which no
    lock-out protects against. They go on to the next backend (ModelBackend) unchecked.
    """

    def authenticate(self, request: HttpRequest | None, username: str | None = None,
                     password: str | None = None, **kwargs: Any) -> None:
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def lock_lifts_at(request: HttpRequest, credentials: dict[str, Any] | None) -> datetime:
    """When the lock-out of this request's username and address ends: the cool-off after their last failure."""
    cool_off = get_cool_off(request)
    now = timezone.now()
    if cool_off is None:  # not configured here (AXES_COOLOFF_TIME is always set); a lock-out without an end
        return now
    latest = None
    handler = AxesProxyHandler.get_implementation()
    # The database handler (ours) keeps the attempts; each queryset is one lock-out parameter's matches.
    for attempts in getattr(handler, "filter_user_attempts", lambda *_: [])(request, credentials):
        moment = attempts.aggregate(last=Max("attempt_time"))["last"]
        if moment is not None and (latest is None or moment > latest):
            latest = moment
    return (latest or now) + cool_off


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict[str, Any] | None = None) -> HttpResponse:
    """The page a locked-out login gets (AXES_LOCKOUT_CALLABLE): 429, saying when to try again, with Retry-After."""
    from django.contrib import admin  # the admin's header and title on the page; loaded with the URLs anyway

    lifts_at = lock_lifts_at(request, credentials)
    wait = max(0, math.ceil((lifts_at - timezone.now()).total_seconds()))
    username = get_client_username(request, credentials) or ""
    logger.warning("admin login of %r from %s refused: locked out after repeated failures until %s",
                   username, getattr(request, "axes_ip_address", "?"), exact_time(lifts_at))
    context = {
        **admin.site.each_context(request),
        "title": "Too many failed logins",
        "username": username,
        "try_again_at": exact_time(lifts_at),
        "try_again_in": relative_time(lifts_at),
    }
    response = render(request, "admin/locked_out.html", context, status=STATUS)
    response["Retry-After"] = str(wait)
    return response
