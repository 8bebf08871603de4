"""`manage.py bench_search` times the subscription search next to a baseline and leaves nothing behind."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from subscriptions.models import (
    Product,
    ProductBlock,
    ResourceType,
    Subscription,
    SubscriptionInstance,
    SubscriptionInstanceValue,
)

MODELS = [Product, ProductBlock, ResourceType, Subscription, SubscriptionInstance, SubscriptionInstanceValue]


@pytest.mark.django_db(transaction=True)
def test_bench_search_prints_median_milliseconds_and_hits_beside_uptime_and_leaves_no_rows():
    before = {model: model.objects.count() for model in MODELS}
    out = StringIO()

    call_command("bench_search", count=40, explain=True, stdout=out)

    output = out.getvalue()
    assert re.search(r"^data: +40 subscriptions, each with 1 instance holding 3 values", output, re.MULTILINE), output
    assert re.search(r"^uptime: +\S", output, re.MULTILINE), output
    rows = re.findall(r"^  (.+?) '.*' +(\d+\.\d\d) +([\d,]+)$", output, re.MULTILINE)
    hits = {label: int(count.replace(",", "")) for label, _, count in rows}
    assert set(hits) == {
        "baseline: primary key lookup", "node name (a resource value)", "customer id", "description word",
        "two words", "id prefix (8 hex digits)", "no match",
    }, output
    assert hits["baseline: primary key lookup"] == hits["node name (a resource value)"] == 1
    assert hits["customer id"] == 20  # twenty subscriptions per customer
    assert hits["no match"] == 0
    assert "plan of node name (a resource value):" in output  # --explain
    assert re.search(r"^removed: +the 40 subscriptions it created", output, re.MULTILINE), output
    assert {model: model.objects.count() for model in MODELS} == before


@pytest.mark.django_db
@pytest.mark.parametrize("count", [0, -1, 10**8, "many", True])
def test_bench_search_refuses_a_count_out_of_its_range(count):
    with pytest.raises(CommandError, match="--count must be a whole number from 1 to 10,000,000"):
        call_command("bench_search", count=count, stdout=StringIO())
    assert not Subscription.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_bench_search_removes_what_it_created_when_a_search_fails(monkeypatch):
    from subscriptions.management.commands import bench_search

    before = {model: model.objects.count() for model in MODELS}

    def broken(query):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(bench_search, "_list_page", broken)
    with pytest.raises(RuntimeError, match="went away"):
        call_command("bench_search", count=15, stdout=StringIO())
    assert {model: model.objects.count() for model in MODELS} == before
