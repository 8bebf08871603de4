"""CORS: off unless CORS_ALLOWED_ORIGINS lists origins; then only those, only under /api/, without credentials."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import api_token

ALLOWED = "https://dash.example.org"
pytestmark = pytest.mark.django_db


@pytest.fixture
def allowed(settings):
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED]


def preflight(origin: str, path: str = "/api/processes/", method: str = "POST"):
    return Client().options(path, HTTP_ORIGIN=origin, HTTP_ACCESS_CONTROL_REQUEST_METHOD=method,
                            HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type, idempotency-key")


def cors_headers(response) -> dict[str, str]:
    return {name.lower(): value for name, value in response.headers.items()
            if name.lower().startswith("access-control")}


def test_a_preflight_from_an_allowed_origin_is_answered_with_its_origin_methods_and_headers(allowed):
    response = preflight(ALLOWED)

    assert response.status_code == 200
    headers = cors_headers(response)
    assert headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in headers["access-control-allow-methods"]
    allowed_headers = set(headers["access-control-allow-headers"].split(", "))
    assert {"authorization", "content-type", "idempotency-key"} <= allowed_headers
    assert "access-control-allow-credentials" not in headers


def test_a_preflight_from_another_origin_gets_no_cors_headers(allowed):
    assert cors_headers(preflight("https://evil.example.com")) == {}


def test_without_allowed_origins_no_answer_carries_cors_headers(settings):
    settings.CORS_ALLOWED_ORIGINS = []

    assert cors_headers(preflight(ALLOWED)) == {}
    assert cors_headers(Client().get("/api/health/", HTTP_ORIGIN=ALLOWED)) == {}


def test_the_admin_never_answers_cors_even_to_an_allowed_origin(allowed):
    assert cors_headers(preflight(ALLOWED, "/admin/login/")) == {}
    assert cors_headers(Client().get("/admin/login/", HTTP_ORIGIN=ALLOWED)) == {}


def test_an_allowed_origin_s_request_with_a_token_may_read_the_answer_and_its_retry_after_and_request_id(allowed):
    response = Client().get("/api/subscriptions/", HTTP_ORIGIN=ALLOWED, HTTP_AUTHORIZATION=f"Token {api_token()}")

    assert response.status_code == 200
    headers = cors_headers(response)
    assert headers["access-control-allow-origin"] == ALLOWED
    assert set(headers["access-control-expose-headers"].split(", ")) == {"etag", "retry-after", "x-request-id"}
    assert "access-control-allow-credentials" not in headers
