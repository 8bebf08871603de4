"""API pages: a count that stops at LIST_COUNT_LIMIT (flagged), `next` and `previous` right either way."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from processes.models import Process
from tests.factories import ProcessFactory, WorkflowFactory

URL = "/api/processes/"


@pytest.fixture
def twelve(db) -> list[str]:
    workflow = WorkflowFactory(name="t_pages")
    return [str(ProcessFactory(workflow=workflow).pk) for _ in range(12)]


def walk(api: APIClient, limit: int) -> tuple[list[str], list[dict]]:
    """Every id, following `next` from the first page; and each page's body without its results."""
    ids, pages, url = [], [], f"{URL}?limit={limit}&ordering=-started_at"
    while url:
        body = api.get(url).json()
        ids += [item["id"] for item in body.pop("results")]
        pages.append(body)
        url = body["next"]
    return ids, pages


def test_under_the_limit_the_count_is_exact_and_the_pages_link_up(api, twelve, settings):
    settings.ORCHESTRATOR = {"LIST_COUNT_LIMIT": 100}

    ids, pages = walk(api, 5)

    assert sorted(ids) == sorted(twelve)
    assert [(page["count"], page["count_exact"]) for page in pages] == [(12, True)] * 3
    assert pages[0]["previous"] is None and pages[-1]["next"] is None
    assert "offset" not in pages[1]["previous"] and "offset=5" in pages[2]["previous"]


def test_over_the_limit_the_count_is_a_lower_bound_and_every_row_is_still_reached(api, twelve, settings):
    settings.ORCHESTRATOR = {"LIST_COUNT_LIMIT": 4}

    ids, pages = walk(api, 5)

    assert sorted(ids) == sorted(twelve) and len(ids) == len(set(ids))
    first, second, last = pages
    assert (first["count"], first["count_exact"]) == (6, False)  # at least: this page and one more row
    assert (second["count"], second["count_exact"]) == (11, False)
    assert (last["count"], last["count_exact"]) == (12, True)  # the last page counts itself
    assert last["next"] is None
    beyond = api.get(URL, {"limit": 5, "offset": 20}).json()
    assert (beyond["results"], beyond["count"], beyond["count_exact"], beyond["next"]) == ([], 4, False, None)


def test_a_short_first_page_asks_for_no_count_and_a_full_one_counts_no_further_than_the_limit(api, twelve, settings):
    settings.ORCHESTRATOR = {"LIST_COUNT_LIMIT": 7}
    table = re.compile(rf'COUNT\(\*\).*\b{Process._meta.db_table}\b', re.S)

    with CaptureQueriesContext(connection) as short:
        assert api.get(URL, {"limit": 20}).json()["count"] == 12
    with CaptureQueriesContext(connection) as full:
        assert api.get(URL, {"limit": 5}).json()["count"] == 7

    assert not any(table.search(query["sql"]) for query in short)
    counts = [query["sql"] for query in full if table.search(query["sql"])]
    assert len(counts) == 1 and "LIMIT 8" in counts[0], counts


def test_the_schema_documents_the_flag_and_the_limit(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()

    page = schema["components"]["schemas"]["PaginatedProcessListItemList"]
    assert page["required"] == ["count", "count_exact", "results"]
    assert page["properties"]["count_exact"]["type"] == "boolean"
    assert "10,000" in page["properties"]["count"]["description"]


def test_an_offset_beyond_any_table_is_an_empty_page_not_an_error(api, twelve):
    body = api.get(URL, {"offset": str(2**70)}).json()

    assert (body["results"], body["count"], body["count_exact"], body["next"]) == ([], 12, True, None)
