"""Admin login lock-out (django-axes): after N bad passwords for a user from an address, a page says until when."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.test import Client

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "correct horse battery staple"  # UserFactory's
HOME = "203.0.113.7"


@pytest.fixture
def limit_3(settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)


@pytest.fixture
def admin_user(db):
    return UserFactory(username="ops", is_staff=True, is_superuser=True)


def log_in(client: Client, password: str, username: str = "ops"):
    return client.post(LOGIN, {"username": username, "password": password})


def logged_in(client: Client) -> bool:
    return client.get("/admin/").status_code == 200


def test_after_the_limit_of_bad_passwords_the_login_answers_429_with_a_page_saying_when_to_try_again(
        limit_3, admin_user):
    client = Client(REMOTE_ADDR=HOME)

    assert [log_in(client, "wrong").status_code for _ in range(2)] == [200, 200]  # the form, with its error
    locked = log_in(client, "wrong")

    assert locked.status_code == 429
    assert locked["Content-Type"].startswith("text/html")
    page = locked.content.decode()
    assert "Too many failed logins for <strong>ops</strong> from your address" in page
    assert re.search(r"logging in is locked until <strong>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</strong> "
                     r"\(in (15 min|14 min \d+ s)\)", page)
    assert "manage.py axes_reset_username ops" in page
    assert 899 <= int(locked["Retry-After"]) <= 900
    assert AccessAttempt.objects.get().failures_since_start == 3


def test_the_right_password_is_refused_during_the_lock_out_without_extending_it(limit_3, admin_user):
    client = Client(REMOTE_ADDR=HOME)
    for _ in range(3):
        log_in(client, "wrong")
    attempt_time = AccessAttempt.objects.get().attempt_time

    refused = log_in(client, PASSWORD)

    assert refused.status_code == 429
    assert "Too many failed logins" in refused.content.decode()
    assert not logged_in(client)
    # The page's "locked until" holds: a try during the lock-out does not push it further.
    assert AccessAttempt.objects.get().attempt_time == attempt_time


def test_the_lock_is_for_that_user_from_that_address_only(limit_3, admin_user):
    UserFactory(username="other", is_staff=True)
    for _ in range(3):
        log_in(Client(REMOTE_ADDR=HOME), "wrong")

    elsewhere = Client(REMOTE_ADDR="198.51.100.20")
    assert log_in(elsewhere, PASSWORD).status_code == 302 and logged_in(elsewhere)
    colleague = Client(REMOTE_ADDR=HOME)
    assert log_in(colleague, PASSWORD, username="other").status_code == 302 and logged_in(colleague)


def test_the_lock_lifts_after_the_cool_off(settings, admin_user):
    settings.AXES_FAILURE_LIMIT = 2
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    client = Client(REMOTE_ADDR=HOME)
    for _ in range(2):
        log_in(client, "wrong")
    assert log_in(client, PASSWORD).status_code == 429

    time.sleep(1.1)

    assert log_in(client, PASSWORD).status_code == 302
    assert logged_in(client)


def test_a_successful_login_forgets_the_earlier_failures(limit_3, admin_user):
    client = Client(REMOTE_ADDR=HOME)
    for _ in range(2):
        log_in(client, "wrong")
    assert log_in(client, PASSWORD).status_code == 302
    client.logout()

    assert [log_in(client, "wrong").status_code for _ in range(2)] == [200, 200]
    assert log_in(client, PASSWORD).status_code == 302


def test_axes_reset_username_lifts_the_lock(limit_3, admin_user):
    from django.core.management import call_command

    client = Client(REMOTE_ADDR=HOME)
    for _ in range(3):
        log_in(client, "wrong")

    call_command("axes_reset_username", "ops", verbosity=0)

    assert log_in(client, PASSWORD).status_code == 302


def test_the_test_client_s_login_and_force_login_still_work(admin_user, client):
    # Logins without a request (tests, the shell) are not counted or locked (orchestrator_site.lockout).
    assert client.login(username="ops", password=PASSWORD)
    assert logged_in(client)
    assert not Client().login(username="ops", password="wrong")
    other = Client()
    other.force_login(admin_user)
    assert logged_in(other)
    assert not AccessAttempt.objects.exists()
