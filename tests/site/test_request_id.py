"""Every request has an id: the caller's X-Request-ID when sane, else a new one; answered and on its log lines."""

from __future__ import annotations

import logging
import re

import pytest

from orchestrator_site import logcontext
from orchestrator_site.request_id import request_id_for

NEW_ID = re.compile(r"[0-9a-f]{32}")


def test_a_sane_incoming_request_id_is_kept_answered_and_on_the_requests_lines(client, json_log):
    response = client.get("/no-such-page/", headers={"X-Request-ID": "3f2c9a1e-7b4d-4e0a-9c1b-5d6e7f8a9b0c"})

    assert response.status_code == 404
    assert response["X-Request-ID"] == "3f2c9a1e-7b4d-4e0a-9c1b-5d6e7f8a9b0c"
    [line] = json_log.about("Not Found: /no-such-page/")
    assert line["request_id"] == "3f2c9a1e-7b4d-4e0a-9c1b-5d6e7f8a9b0c"
    assert line["logger"] == "django.request"


@pytest.mark.parametrize("incoming", [
    "line one\nline two",          # a newline would forge a second log line in plain text
    "evil\r\nX-Injected: 1",
    "a" * 10_000,                   # 10 kB on every line of the request
    "a" * 129,
    "two words",
    '"quoted"',
    "",
    "-starts-with-a-dash",
])
def test_an_insane_incoming_request_id_is_replaced_by_a_new_one(client, json_log, incoming):
    response = client.get("/no-such-page/", headers={"X-Request-ID": incoming})

    request_id = response["X-Request-ID"]
    assert NEW_ID.fullmatch(request_id)
    [line] = json_log.about("Not Found: /no-such-page/")
    assert line["request_id"] == request_id
    if incoming:
        assert not [line for line in json_log.lines for value in line.values() if incoming in str(value)]


def test_each_request_without_an_id_gets_a_new_one(client):
    first = client.get("/no-such-page/")["X-Request-ID"]
    second = client.get("/no-such-page/")["X-Request-ID"]

    assert NEW_ID.fullmatch(first) and NEW_ID.fullmatch(second)
    assert first != second


def test_the_longest_sane_id_is_kept():
    longest = "A1._:@/+=-" + "b" * 118
    assert len(longest) == 128
    assert request_id_for(longest) == longest


def test_lines_logged_after_the_request_carry_no_request_id(client, json_log):
    client.get("/no-such-page/", headers={"X-Request-ID": "before"})
    logging.getLogger("processes.engine").warning("after the request")

    assert logcontext.request_id() is None
    [line] = json_log.about("after the request")
    assert "request_id" not in line


@pytest.mark.django_db
def test_an_api_answer_carries_the_request_id_too(api):
    response = api.get("/api/processes/", headers={"X-Request-ID": "api-call-7"})

    assert response.status_code == 200
    assert response["X-Request-ID"] == "api-call-7"
