"""Errors every API endpoint shares: JSON bodies with a human message, 401, 413, malformed JSON."""

from __future__ import annotations

import json
import uuid

import pytest
from rest_framework.test import APIClient

from tests.factories import UserFactory, api_token


@pytest.fixture
def api(staff_api):
    return staff_api


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


# --- deeply nested JSON -------------------------------------------------------------------------------
BRACKETS = "[" * 20000 + "]" * 20000  # about 40 kB: deeper than Python's decoder can recurse


def deep_body(depth: int) -> str:
    """{"workflow": "nope", "input": {"a": {"a": ... 1}}}: `depth` levels of objects in all."""
    return '{"workflow": "nope", "input": ' + '{"a": ' * (depth - 1) + "1" + "}" * (depth - 1) + "}"


POSTS = [
    ("post", "/api/processes/"),
    ("post", "/api/processes/{id}/resume/"),
    ("post", "/api/processes/{id}/retry/"),
    ("post", "/api/processes/{id}/abort/"),
    ("put", "/api/settings/engine/"),
]


@pytest.mark.parametrize(("method", "url"), POSTS, ids=[f"{m} {u}" for m, u in POSTS])
@pytest.mark.parametrize("body", [BRACKETS, deep_body(6000), deep_body(33)], ids=["brackets", "6000-objects", "33"])
def test_a_deeply_nested_json_body_is_a_400_on_every_endpoint_that_takes_one(api, method, url, body):
    from processes.models import Process

    response = getattr(api, method)(url.format(id=uuid.uuid4()), data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "the request body is nested too deeply: at most 32 levels of arrays and objects are accepted",
    }
    assert not Process.objects.exists()


def test_a_body_nested_as_deep_as_the_limit_is_parsed(api):
    # 32 levels: parsed, then judged by the view (an unknown workflow), not refused as too deep.
    response = api.post("/api/processes/", data=deep_body(32), content_type="application/json")

    assert response.status_code == 404
    assert response.json()["detail"].startswith("unknown workflow 'nope'")


def test_the_body_depth_limit_is_a_setting(api, settings):
    settings.ORCHESTRATOR = {"JSON_MAX_DEPTH": 2}

    response = api.post("/api/processes/", data=deep_body(3), content_type="application/json")

    assert response.status_code == 400
    assert "at most 2 levels" in response.json()["detail"]


# --- unknown URLs and malformed ids: the JSON 404, never an HTML page ----------------------------------
NOT_FOUND = {
    "/api/nope/": "no API endpoint at /api/nope/; see /api/docs/ for the endpoints",
    "/api/": "no API endpoint at /api/; see /api/docs/ for the endpoints",
    "/api/processes/x/y/z/": "no API endpoint at /api/processes/x/y/z/; see /api/docs/ for the endpoints",
    "/api/subscriptions/a.b/": "no API endpoint at /api/subscriptions/a.b/; see /api/docs/ for the endpoints",
    "/api/subscriptions/not-a-uuid/": "subscription not-a-uuid does not exist",
    "/api/products/not-a-uuid/": "product not-a-uuid does not exist",
    "/api/processes/%00/": "process \x00 does not exist",
    "/api/processes/a%20'b%22/": "process a 'b\" does not exist",
    "/api/subscriptions/%00/workflows/": "subscription \x00 does not exist",
}


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
@pytest.mark.parametrize("url", list(NOT_FOUND))
def test_unknown_api_urls_and_malformed_ids_answer_the_json_404(api, settings, url, debug):
    settings.DEBUG = debug

    response = api.get(url)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": NOT_FOUND[url]}


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_any_method_on_an_unknown_api_url_is_the_json_404(db, method):
    # A token client has no CSRF cookie: it must still learn that the URL is wrong.
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token()}")

    response = getattr(client, method)("/api/processes/x/y/", data="{}", content_type="application/json")

    assert response.status_code == 404
    assert response.json() == {"detail": "no API endpoint at /api/processes/x/y/; see /api/docs/ for the endpoints"}


def test_an_api_path_without_its_slash_is_still_redirected_to_the_endpoint(api):
    response = api.get("/api/processes")

    assert response.status_code == 301
    assert response["Location"] == "/api/processes/"


def test_pages_outside_the_api_keep_djangos_html_404(api, settings):
    settings.DEBUG = False

    response = api.get("/nope/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_an_unexpected_error_under_the_api_is_a_json_500_without_a_traceback(db, settings, monkeypatch):
    from processes.api import engine_views

    def broken() -> dict:
        raise RuntimeError("secret internals: password=hunter2")

    monkeypatch.setattr(engine_views, "engine_status", broken)
    settings.DEBUG = False
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(UserFactory())

    response = client.get("/api/settings/engine/")

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "detail": "internal error: the server could not answer this request; the error has been logged",
    }
    assert b"hunter2" not in response.content
    assert b"Traceback" not in response.content


def test_a_500_outside_the_api_keeps_djangos_html_page():
    from django.test import RequestFactory

    from orchestrator_site.api import handler500

    response = handler500(RequestFactory().get("/admin/"))

    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
