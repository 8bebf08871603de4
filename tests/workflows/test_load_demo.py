"""`manage.py load_demo` creates the node product family once, however often it runs."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from subscriptions.models import FixedInput, Product, ProductBlock, ProductBlockRelation, ResourceType

MODELS = (Product, ProductBlock, ResourceType, FixedInput, ProductBlockRelation)


def run(*args: str) -> str:
    out = StringIO()
    call_command("load_demo", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_load_demo_creates_the_node_product_family():
    output = run()

    assert set(Product.objects.values_list("name", flat=True)) >= {"Node", "Port 10G", "Port 100G", "Link"}
    node = Product.objects.get(name="Node")
    assert list(node.product_blocks.values_list("name", flat=True)) == ["NodeBlock"]
    assert FixedInput.objects.get(product__name="Port 100G", name="speed").value == "100000"
    link_ports = ProductBlockRelation.objects.get(in_use_by__name="LinkBlock", depends_on__name="PortBlock")
    assert (link_ports.min, link_ports.max) == (2, 2)
    assert "created product Node" in output


@pytest.mark.django_db
def test_load_demo_twice_leaves_one_copy_and_says_nothing_changed():
    run()
    counts = {m.__name__: m.objects.count() for m in MODELS}
    m2m = (ProductBlock.resource_types.through.objects.count(), Product.product_blocks.through.objects.count())

    output = run()

    assert {m.__name__: m.objects.count() for m in MODELS} == counts
    assert (ProductBlock.resource_types.through.objects.count(),
            Product.product_blocks.through.objects.count()) == m2m
    assert "nothing changed" in output


@pytest.mark.django_db
def test_load_demo_repairs_a_changed_demo_product():
    run()
    Product.objects.filter(name="Node").update(description="edited by hand")
    FixedInput.objects.filter(product__name="Port 10G", name="speed").update(value="1")

    output = run()

    assert Product.objects.get(name="Node").description == "A router or switch in the network"
    assert FixedInput.objects.get(product__name="Port 10G", name="speed").value == "10000"
    assert "updated product Node" in output


@pytest.mark.django_db
def test_demo_login_prints_a_new_random_password_that_works(client):
    first, second = StringIO(), StringIO()
    call_command("demo_login", stdout=first)
    call_command("demo_login", stdout=second)

    def password(text: str) -> str:
        return text.strip().rsplit("/", 1)[-1].strip()

    assert password(first.getvalue()) != password(second.getvalue())
    assert client.login(username="admin", password=password(second.getvalue()))
    assert not client.login(username="admin", password=password(first.getvalue()))


@pytest.mark.django_db
def test_demo_login_prints_the_address_the_server_is_started_on():
    out = StringIO()
    call_command("demo_login", "--url", "http://127.0.0.1:8765/admin/", stdout=out)

    assert "Log in at http://127.0.0.1:8765/admin/ as  admin / " in out.getvalue()
