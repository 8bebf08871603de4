"""Errors every API endpoint shares: JSON bodies with a human message, 401, 413, malformed JSON."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from tests.factories import UserFactory


@pytest.fixture
def api(db):
    client = APIClient()
    client.force_authenticate(UserFactory(is_superuser=True, is_staff=True))
    return client


def test_a_body_over_the_configured_size_is_refused_with_413(api, settings):
    settings.ORCHESTRATOR = {"API_MAX_BODY_BYTES": 1000}
    body = json.dumps({"workflow": "t", "input": {"x": "y" * 2000}})

    response = api.post("/api/processes/", data=body, content_type="application/json")

    assert response.status_code == 413
    assert response.json()["detail"] == f"request body of {len(body)} bytes is larger than the 1000 bytes allowed"


def test_the_default_limit_is_one_mebibyte(api):
    small = json.dumps({"workflow": "nope", "input": {"x": "y" * 500_000}})
    large = json.dumps({"workflow": "nope", "input": {"x": "y" * 1_100_000}})

    assert api.post("/api/processes/", data=small, content_type="application/json").status_code == 404
    assert api.post("/api/processes/", data=large, content_type="application/json").status_code == 413


def test_malformed_json_is_a_400_with_a_message_not_a_500(api):
    response = api.post("/api/processes/", data='{"workflow": ', content_type="application/json")

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_anonymous_requests_get_401_json_with_a_token_challenge(db):
    response = APIClient().get("/api/subscriptions/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {"detail": "Authentication credentials were not provided."}


def test_a_token_issued_by_the_documented_command_authenticates(db):
    from io import StringIO

    from django.core.management import call_command

    UserFactory(username="robot")
    out = StringIO()
    call_command("drf_create_token", "robot", stdout=out)
    key = out.getvalue().split()[2]

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/subscriptions/").status_code == 200
