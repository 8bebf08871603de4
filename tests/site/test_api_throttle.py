"""The API refuses (429, Retry-After) an address that sent too many bad tokens; others, and sessions, go on."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from rest_framework.test import APIClient

from orchestrator_site.client_address import client_address
from subscriptions.access_models import BadTokenAttempts
from tests.factories import UserFactory, api_token

URL = "/api/subscriptions/"
ATTACKER = "203.0.113.7"
OTHER = "198.51.100.20"


@pytest.fixture
def limit_3(settings):
    settings.ORCHESTRATOR = {"API_BAD_TOKEN_LIMIT": 3, "API_BAD_TOKEN_WINDOW_SECONDS": 60}


def client_from(address: str, key: str | None = None, **headers: str) -> APIClient:
    client = APIClient(REMOTE_ADDR=address, **headers)
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.mark.django_db
def test_after_the_limit_of_bad_tokens_the_address_gets_429_with_retry_after_and_when_to_try_again(limit_3):
    bad = client_from(ATTACKER, "0" * 64)

    assert [bad.get(URL).status_code for _ in range(3)] == [401, 401, 401]
    refused = bad.get(URL)

    assert refused.status_code == 429
    assert 59 <= int(refused["Retry-After"]) <= 60
    detail = refused.json()["detail"]
    assert detail.startswith("too many requests with a wrong, expired or revoked API token from this address: "
                             "try again in ")
    assert f"try again in {refused['Retry-After']} s (at " in detail and detail.endswith(" UTC)")
    assert set(refused.json()) == {"detail"}


@pytest.mark.django_db
def test_while_refused_even_a_right_token_from_that_address_gets_429_but_one_from_elsewhere_works(limit_3):
    key = api_token()
    for _ in range(3):
        client_from(ATTACKER, "not-a-token").get(URL)

    assert client_from(ATTACKER, key).get(URL).status_code == 429
    assert client_from(OTHER, key).get(URL).status_code == 200
    assert client_from(OTHER, "not-a-token").get(URL).status_code == 401  # counted apart


@pytest.mark.django_db
def test_a_refused_address_may_still_use_the_admin_session_and_anonymous_requests_get_401(limit_3, staff_user):
    for _ in range(4):
        client_from(ATTACKER, "not-a-token").get(URL)

    session = client_from(ATTACKER)
    session.force_login(staff_user)
    assert session.get(URL).status_code == 200
    anonymous = client_from(ATTACKER).get(URL)
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"] == "Token"


@pytest.mark.django_db
def test_the_block_lifts_after_the_window(settings):
    settings.ORCHESTRATOR = {"API_BAD_TOKEN_LIMIT": 2, "API_BAD_TOKEN_WINDOW_SECONDS": 1}
    key = api_token()
    for _ in range(2):
        client_from(ATTACKER, "not-a-token").get(URL)
    assert client_from(ATTACKER, key).get(URL).status_code == 429

    time.sleep(1.1)

    assert client_from(ATTACKER, key).get(URL).status_code == 200
    # A new window: one bad token is one failure again, not a block.
    assert client_from(ATTACKER, "not-a-token").get(URL).status_code == 401
    assert client_from(ATTACKER, key).get(URL).status_code == 200


@pytest.mark.django_db
def test_good_tokens_are_not_counted_and_failures_spread_over_windows_never_block(settings):
    settings.ORCHESTRATOR = {"API_BAD_TOKEN_LIMIT": 2, "API_BAD_TOKEN_WINDOW_SECONDS": 60}
    key = api_token()
    client_from(ATTACKER, "not-a-token").get(URL)
    for _ in range(5):
        assert client_from(ATTACKER, key).get(URL).status_code == 200
    assert BadTokenAttempts.objects.get(address=ATTACKER).failures == 1


@pytest.mark.django_db
def test_x_forwarded_for_is_ignored_unless_proxies_are_trusted(limit_3):
    # Untrusted: a client that writes a new X-Forwarded-For on each request is still one address.
    for n in range(3):
        client_from(ATTACKER, "not-a-token", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").get(URL)
    assert client_from(ATTACKER, "not-a-token", HTTP_X_FORWARDED_FOR="10.0.0.99").get(URL).status_code == 429
    assert list(BadTokenAttempts.objects.values_list("address", flat=True)) == [ATTACKER]


def test_with_trusted_proxies_the_address_is_the_one_the_outermost_proxy_saw(settings):
    from django.test import RequestFactory

    def address(forwarded: str | None) -> str | None:
        extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
        return client_address(RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", **extra))

    assert address("192.0.2.9, 198.51.100.1") == "10.0.0.1"  # the default: no proxy trusted
    settings.ORCHESTRATOR = {"TRUSTED_PROXY_COUNT": 1}
    assert address("192.0.2.9, 198.51.100.1") == "198.51.100.1"  # what the client wrote is left of it
    assert address(None) == "10.0.0.1"  # not through the proxy
    assert address("not an address") == "10.0.0.1"
    settings.ORCHESTRATOR = {"TRUSTED_PROXY_COUNT": 2}
    assert address("192.0.2.9, 198.51.100.1, 10.0.0.5") == "198.51.100.1"
    assert address("10.0.0.5") == "10.0.0.1"  # fewer entries than proxies


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
def test_bad_tokens_sent_at_once_from_many_threads_are_all_counted(settings):
    # Each thread has its own database connection, as each web process has: the row lock makes them count
    # one after the other instead of overwriting each other's count.
    settings.ORCHESTRATOR = {"API_BAD_TOKEN_LIMIT": 100, "API_BAD_TOKEN_WINDOW_SECONDS": 60}
    UserFactory()  # the users table is not empty: the token lookup runs as in production
    threads, start = 8, threading.Barrier(8)
    statuses: list[int] = []

    def send() -> None:
        try:
            start.wait()
            statuses.append(client_from(ATTACKER, "not-a-token").get(URL).status_code)
        finally:
            connection.close()

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert statuses == [401] * threads
    assert BadTokenAttempts.objects.get(address=ATTACKER).failures == threads


@pytest.mark.django_db
def test_unblock_api_address_lifts_the_block_at_once(limit_3):
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    key = api_token()
    for _ in range(3):
        client_from(ATTACKER, "not-a-token").get(URL)
    assert client_from(ATTACKER, key).get(URL).status_code == 429

    out = StringIO()
    call_command("unblock_api_address", ATTACKER, stdout=out)

    assert out.getvalue() == f"Forgot the bad API tokens of {ATTACKER}.\n"
    assert client_from(ATTACKER, key).get(URL).status_code == 200
    with pytest.raises(CommandError, match=f"no bad API tokens are counted for '{OTHER}'"):
        call_command("unblock_api_address", OTHER)
    with pytest.raises(CommandError, match="give either an ADDRESS or --all"):
        call_command("unblock_api_address")
