"""What the subscription's admin page shows: its block tree, the subscriptions it uses and that use it, its
last validation, and, out of sync, since when and who holds it; in the same number of queries whatever its size."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from processes.models import ProcessStatus
from processes.services import abort_process, start_process
from subscriptions.models import Product, Subscription
from tests.factories import ProcessFactory, ProcessSubscriptionFactory, SubscriptionFactory, WorkflowFactory
from workflows.node.products import NodeProduct, PortProduct

pytestmark = pytest.mark.django_db(transaction=True)  # the inline executor runs processes after the commit


def change_url(subscription_id: object) -> str:
    return reverse("admin:subscriptions_subscription_change", args=[subscription_id])


def process_url(process_id: object) -> str:
    return reverse("admin:processes_process_change", args=[process_id])


def page(client, subscription: Subscription) -> str:
    response = client.get(change_url(subscription.pk))
    assert response.status_code == 200
    return response.content.decode()


def section(html: str, element_id: str) -> str:
    """The text of the element with this id, up to its closing tag (enough for the page's flat sections)."""
    match = re.search(rf'id="{element_id}".*?</div>', html, re.S)
    assert match, f"no #{element_id} on the page"
    return match.group(0)


def field(html: str, name: str) -> str:
    """The read-only field `name` of the change form, as rendered."""
    match = re.search(rf'<div class="form-row field-{name}">.*?<div class="readonly">(.*?)</div>\s*</div>', html, re.S)
    assert match, f"no read-only field {name} on the page"
    return match.group(1)


def add_port(node: Subscription, name: str) -> Subscription:
    """An active port subscription on `node`'s node block."""
    model = PortProduct.new(Product.objects.get(name="Port 10G"), "customer-1", f"Port {name}")
    model.port.port_name = name
    model.port.port_mode = "tagged"
    model.port.node = NodeProduct.load(node).node
    model.subscription.provision()
    model.subscription.activate()
    model.subscription.insync = True
    model.save()
    return model.subscription


# --- the block tree and the relations ------------------------------------------------------------------
def test_the_block_tree_shows_values_nested_blocks_and_links_a_block_of_another_subscription(
    staff_client, active_node, active_port
) -> None:
    blocks = field(page(staff_client, active_port), "product_blocks")

    port_block = PortProduct.load(active_port).port
    # The port's own block, with its values and a link to its instance ...
    assert "<strong>PortBlock</strong>" in blocks
    assert reverse("admin:subscriptions_subscriptioninstance_change", args=[port_block.instance_id]) in blocks
    for name, value in (("port_name", "xe-0/0/0"), ("port_mode", "tagged"), ("enabled", "true")):
        assert f"<tr><th>{name}</th><td>{value}</td></tr>" in blocks
    # ... holding, under its field node, the node's block: owned by the node's subscription, linked to it.
    nested = blocks[blocks.index('<span class="block-field">node:</span>'):]
    assert "<strong>NodeBlock</strong>" in nested
    assert f'of <a href="{change_url(active_node.pk)}">Node rtr-1</a> (active)' in nested
    assert "<tr><th>node_name</th><td>rtr-1</td></tr>" in nested


def test_a_subscription_without_blocks_says_so(staff_client) -> None:
    html = page(staff_client, SubscriptionFactory(lifecycle="active"))

    assert "This subscription has no product blocks." in field(html, "product_blocks")
    assert "It uses no other subscription." in field(html, "uses")
    assert "No other subscription uses it." in field(html, "used_by")


def test_the_page_links_the_subscriptions_it_uses_and_those_that_use_it_with_their_status(
    staff_client, active_node, active_port
) -> None:
    second = add_port(active_node, "xe-0/0/1")
    Subscription.objects.filter(pk=second.pk).update(insync=False)

    node_page = page(staff_client, active_node)
    used_by = field(node_page, "used_by")
    assert f'<a href="{change_url(active_port.pk)}">Port 10G {str(active_port.pk)[:8]}…</a> ' \
           f"Port rtr-1 xe-0/0/0 (active)" in used_by
    assert f'<a href="{change_url(second.pk)}">Port 10G {str(second.pk)[:8]}…</a> ' \
           f"Port xe-0/0/1 (active, out of sync)" in used_by
    assert "via PortBlock.node" in used_by
    assert "It uses no other subscription." in field(node_page, "uses")

    uses = field(page(staff_client, active_port), "uses")
    assert f'<a href="{change_url(active_node.pk)}">Node {str(active_node.pk)[:8]}…</a> Node rtr-1 (active)' in uses


# --- the last validation --------------------------------------------------------------------------------
def test_the_last_validation_is_the_newest_validate_process_with_its_failure_reason(staff_client, active_node):
    validate, modify = WorkflowFactory(target="validate"), WorkflowFactory(target="modify")
    now = timezone.now()
    older = ProcessFactory(workflow=validate, status=ProcessStatus.COMPLETED, started_at=now - timedelta(days=2))
    newest = ProcessFactory(workflow=validate, status=ProcessStatus.FAILED, started_at=now - timedelta(days=1),
                            failed_reason="node rtr-1: the subscription says loopback None, IPAM says 10.255.1.1")
    not_a_validation = ProcessFactory(workflow=modify, status=ProcessStatus.COMPLETED, started_at=now)
    for process in (older, newest, not_a_validation):
        ProcessSubscriptionFactory(process=process, subscription=active_node)

    shown = section(page(staff_client, active_node), "last-validation")

    assert f'<a href="{process_url(newest.process_id)}">{validate.name} {newest.short_id}</a>' in shown
    assert "failed" in shown
    assert "node rtr-1: the subscription says loopback None, IPAM says 10.255.1.1" in shown
    assert process_url(older.process_id) not in shown and process_url(not_a_validation.process_id) not in shown


def test_a_real_failed_validation_is_shown_and_a_subscription_never_validated_says_so(staff_client, active_node):
    assert "No validation has run on this subscription." in section(page(staff_client, active_node),
                                                                      "last-validation")

    process = start_process("validate_node", subscription_id=active_node.pk, by="alice")
    assert process.status == "failed"

    shown = section(page(staff_client, active_node), "last-validation")
    assert process_url(process.process_id) in shown and "failed" in shown
    assert "the subscription says loopback None, IPAM says" in shown


# --- out of sync ----------------------------------------------------------------------------------------
def test_an_out_of_sync_subscription_says_since_when_and_links_the_process_holding_it(staff_client, active_node):
    assert 'id="out-of-sync-banner"' not in page(staff_client, active_node)

    holder = start_process("modify_node", subscription_id=active_node.pk, by="alice")

    banner = section(page(staff_client, active_node), "out-of-sync-banner")
    since = Subscription.objects.get(pk=active_node.pk).out_of_sync_since
    assert since is not None and "since an unknown time" not in banner
    assert "<strong>Out of sync</strong>" in banner
    exact = timezone.localtime(since).strftime("%Y-%m-%d %H:%M:%S")
    assert re.search(rf"since <time [^>]*>{exact} UTC</time> \((just now|\d+ s ago)\)", banner)
    assert f'<a class="holder" href="{process_url(holder.process_id)}">process {str(holder.process_id)[:8]}…</a> ' \
           f"(modify_node, suspended)" in banner
    assert "set it in sync" not in banner


def test_with_no_process_holding_it_the_banner_offers_set_in_sync(staff_client, active_node):
    holder = start_process("modify_node", subscription_id=active_node.pk, by="alice")
    abort_process(holder.process_id, by="alice", reason="wrong node")

    banner = section(page(staff_client, active_node), "out-of-sync-banner")

    assert "No process holds it" in banner and 'class="holder"' not in banner
    set_in_sync = reverse("admin:subscriptions_subscription_set_in_sync", args=[active_node.pk])
    assert f'<a href="{set_in_sync}">set it in sync</a>' in banner


def test_a_row_that_went_out_of_sync_before_it_was_recorded_says_since_an_unknown_time(staff_client, active_node):
    Subscription.objects.filter(pk=active_node.pk).update(insync=False, out_of_sync_since=None)

    banner = section(page(staff_client, active_node), "out-of-sync-banner")

    assert "since an unknown time" in banner and "No process holds it" in banner


# --- bounded queries ------------------------------------------------------------------------------------
def test_the_page_runs_the_same_number_of_queries_for_3_and_30_users(staff_client, active_node):
    for number in range(3):
        add_port(active_node, f"xe-0/0/{number}")
    page(staff_client, active_node)  # warm caches (content types, session) out of the count
    with CaptureQueriesContext(connection) as three:
        html = page(staff_client, active_node)
    assert field(html, "used_by").count("<li>") == 3

    for number in range(3, 30):
        add_port(active_node, f"xe-0/0/{number}")
    with CaptureQueriesContext(connection) as thirty:
        html = page(staff_client, active_node)

    assert field(html, "used_by").count("<li>") == 30
    assert len(thirty) == len(three), [query["sql"] for query in thirty.captured_queries]
