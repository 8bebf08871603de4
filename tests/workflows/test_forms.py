"""Input forms: field-level refusals of bad input, and the JSON Schema a frontend renders them from."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator
from rest_framework import serializers

from orchestrator_site.errors import InvalidInput
from subscriptions.models import Product
from workflows.forms import json_schema, validate_input
from workflows.node.demo import load_demo_products
from workflows.node.forms import CreateNodeForm, ModifyNodeForm
from workflows.registry import get_workflow

GOOD_NODE = {"node_name": "rt1.ams", "node_role": "core", "inventory_id": 7}


def refused(form, data) -> InvalidInput:
    with pytest.raises(InvalidInput) as excinfo:
        validate_input(form, data, what="input for test")
    return excinfo.value


# --- validate_input ---------------------------------------------------------------------------------
def test_valid_input_comes_back_as_plain_json_data():
    assert validate_input(CreateNodeForm, {**GOOD_NODE, "inventory_id": "7"}, what="input") == GOOD_NODE
    assert validate_input(ModifyNodeForm, {"node_name": "rt2"}, what="input") == {"node_name": "rt2"}


def test_unknown_keys_are_refused_naming_the_fields_expected():
    error = refused(ModifyNodeForm, {"node_name": "rt2", "colour": "red"})

    assert set(error.errors) == {"colour"}
    assert "unknown field" in error.errors["colour"][0]
    assert "node_name" in error.errors["colour"][0]
    assert "colour" in error.detail
    assert error.status_code == 400


def test_wrong_types_are_refused_field_by_field():
    error = refused(CreateNodeForm, {"node_name": "Not A Host!", "node_role": "spine", "inventory_id": "seven"})

    assert set(error.errors) == {"node_name", "node_role", "inventory_id"}
    assert any("valid integer" in m for m in error.errors["inventory_id"])
    assert any("spine" in m for m in error.errors["node_role"])
    # The one-line message names every field at fault.
    for name in ("node_name", "node_role", "inventory_id"):
        assert name in error.detail
    assert "\n" not in error.detail


def test_out_of_range_values_are_refused():
    error = refused(CreateNodeForm, {**GOOD_NODE, "inventory_id": 0})

    assert set(error.errors) == {"inventory_id"}


def test_missing_required_fields_are_refused_and_optional_ones_are_not():
    error = refused(CreateNodeForm, {"node_name": "rt1"})

    assert set(error.errors) == {"node_role", "inventory_id"}
    assert error.errors["node_role"] == ["This field is required."]
    # node_role is optional when modifying.
    assert validate_input(ModifyNodeForm, {"node_name": "rt1"}, what="input") == {"node_name": "rt1"}


def test_unknown_and_invalid_fields_are_reported_together():
    error = refused(CreateNodeForm, {"node_name": "rt1", "node_role": "edge", "inventory_id": "x", "extra": 1})

    assert set(error.errors) == {"inventory_id", "extra"}


@pytest.mark.parametrize("data", [["node_name", "rt1"], "rt1", 42, True], ids=["list", "str", "int", "bool"])
def test_input_that_is_not_an_object_is_refused(data):
    error = refused(CreateNodeForm, data)

    assert "must be a JSON object" in error.detail
    assert type(data).__name__ in error.detail


def test_no_input_means_an_empty_object():
    error = refused(ModifyNodeForm, None)

    assert set(error.errors) == {"node_name"}


def test_a_workflow_without_a_form_refuses_any_input():
    assert validate_input(None, {}, what="input") == {}
    assert validate_input(None, None, what="input") == {}

    error = refused(None, {"anything": 1})

    assert set(error.errors) == {"anything"}
    assert "takes no input" in error.detail


def test_nested_serializer_errors_are_flattened_to_messages():
    class Address(serializers.Serializer):
        city = serializers.CharField()

    class WithAddress(serializers.Serializer):
        address = Address()

    error = refused(WithAddress, {"address": {}})

    assert error.errors["address"] == ["city: This field is required."]


# --- JSON Schema -------------------------------------------------------------------------------------
def test_create_node_form_schema():
    schema = json_schema(CreateNodeForm, title="Create node")

    Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object"
    assert schema["title"] == "Create node"
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert set(props) == {"node_name", "node_role", "inventory_id"}
    assert sorted(schema["required"]) == ["inventory_id", "node_name", "node_role"]
    assert props["node_name"]["type"] == "string"
    assert props["node_name"]["maxLength"] == 63
    assert "lower-case" in props["node_name"]["description"]
    assert props["node_role"]["enum"] == ["core", "edge"]
    assert props["inventory_id"]["type"] == "integer"
    assert props["inventory_id"]["minimum"] == 1


def test_modify_node_form_schema():
    schema = json_schema(ModifyNodeForm)

    Draft202012Validator.check_schema(schema)
    assert set(schema["properties"]) == {"node_name", "node_role"}
    assert schema["required"] == ["node_name"]
    assert schema["properties"]["node_role"]["enum"] == ["core", "edge"]
    assert schema["properties"]["node_name"]["type"] == "string"


def test_schema_of_no_form_is_an_empty_object():
    schema = json_schema(None)

    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    assert validator.is_valid({})
    assert not validator.is_valid({"anything": 1})


@pytest.mark.django_db
def test_create_node_initial_form_schema_lists_the_node_product():
    load_demo_products()
    node = Product.objects.get(name="Node")
    form = get_workflow("create_node").initial_input_form

    schema = json_schema(form, title="Create node")

    Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    # The product and customer come first, then the workflow's own fields, in their declared order.
    assert list(props) == ["product", "customer_id", "description", "node_name", "node_role", "inventory_id"]
    assert sorted(schema["required"]) == ["customer_id", "inventory_id", "node_name", "node_role", "product"]
    assert props["product"]["type"] == "string"
    # Only products of the workflow's product types are offered: the Node, not the ports or the link.
    assert props["product"]["oneOf"] == [{"const": str(node.pk), "title": "Node"}]
    assert props["customer_id"] == {
        "title": "Customer id", "description": "The customer the subscription is for.", "type": "string",
        "maxLength": 100,
    }
    assert props["node_role"]["enum"] == ["core", "edge"]


@pytest.mark.django_db
def test_create_node_schema_accepts_good_input_and_rejects_bad_input_like_the_form():
    load_demo_products()
    node = Product.objects.get(name="Node")
    form = get_workflow("create_node").initial_input_form
    validator = Draft202012Validator(json_schema(form))
    good = {"product": str(node.pk), "customer_id": "c-1", **GOOD_NODE}

    assert validator.is_valid(good), list(validator.iter_errors(good))
    assert validate_input(form, good, what="input")["product"] == str(node.pk)

    port = Product.objects.get(name="Port 10G")
    bad_inputs = [
        {**good, "node_role": "spine"},
        {**good, "inventory_id": "seven"},
        {**good, "product": str(port.pk)},  # a product the workflow does not serve
        {**good, "colour": "red"},
        {key: value for key, value in good.items() if key != "customer_id"},
    ]
    for bad in bad_inputs:
        assert not validator.is_valid(bad), bad
        with pytest.raises(InvalidInput):
            validate_input(form, bad, what="input")


@pytest.mark.django_db
def test_create_node_schema_is_valid_before_any_product_exists():
    # A fresh installation: the API shows the form before anyone loaded a product.
    form = get_workflow("create_node").initial_input_form

    schema = json_schema(form)

    Draft202012Validator.check_schema(schema)
    good = {"product": "anything", "customer_id": "c-1", **GOOD_NODE}
    assert not Draft202012Validator(schema).is_valid(good)  # nothing to choose yet
    error = refused(form, good)
    assert "product" in error.errors


def test_modify_node_schema_rejects_a_host_name_the_form_refuses():
    validator = Draft202012Validator(json_schema(ModifyNodeForm))

    assert validator.is_valid({"node_name": "rt2.ams-1"})
    assert not validator.is_valid({"node_name": "Not A Host!"})
    assert not validator.is_valid({"node_name": "x" * 64})
    assert not validator.is_valid({"node_role": "core"})  # node_name is required


def test_schema_of_other_field_types():
    class Everything(serializers.Serializer):
        flag = serializers.BooleanField(default=False)
        ratio = serializers.FloatField(min_value=0.5, max_value=2)
        email = serializers.EmailField(required=False, allow_null=True)
        tags = serializers.ListField(child=serializers.CharField(), max_length=3)
        modes = serializers.MultipleChoiceField(choices=["a", "b"])
        address = serializers.IPAddressField(protocol="ipv4")
        computed = serializers.CharField(read_only=True)
        slug = serializers.SlugField()
        unicode_slug = serializers.SlugField(allow_unicode=True)
        link = serializers.URLField()

    schema = json_schema(Everything)

    Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert "computed" not in props
    assert props["flag"] == {"title": "Flag", "default": False, "type": "boolean"}
    assert (props["ratio"]["type"], props["ratio"]["minimum"], props["ratio"]["maximum"]) == ("number", 0.5, 2)
    assert props["email"]["type"] == ["string", "null"]
    assert props["email"]["format"] == "email"
    assert props["tags"]["type"] == "array"
    assert props["tags"]["items"]["type"] == "string"
    assert props["tags"]["maxItems"] == 3
    assert props["modes"]["type"] == "array"
    assert props["modes"]["items"] == {"enum": ["a", "b"]}
    assert props["address"]["format"] == "ipv4"
    assert props["slug"]["pattern"] == "^[-a-zA-Z0-9_]+$"
    # Python-only regex syntax (a trailing \Z) and the URL validator's regex are not handed to a frontend.
    assert "pattern" not in props["unicode_slug"]
    assert props["link"] == {"title": "Link", "type": "string", "format": "uri"}
    assert sorted(schema["required"]) == ["address", "link", "modes", "ratio", "slug", "tags", "unicode_slug"]


# --- integer bounds and nesting depth -----------------------------------------------------------------
class Counts(serializers.Serializer):
    count = serializers.IntegerField()
    positive = serializers.IntegerField(min_value=1)
    huge = serializers.IntegerField(max_value=10**30)
    many = serializers.ListField(child=serializers.IntegerField(), required=False)


COUNTS = {"count": 0, "positive": 1, "huge": 0}


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63)], ids=["int64-max", "int64-min"])
def test_an_integer_field_without_bounds_takes_the_signed_64_bit_range(value):
    assert validate_input(Counts, {**COUNTS, "count": value}, what="input")["count"] == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (2**63, "Ensure this value is less than or equal to 9223372036854775807."),
        (10**30, "Ensure this value is less than or equal to 9223372036854775807."),
        (-(2**63) - 1, "Ensure this value is greater than or equal to -9223372036854775808."),
        (1e300, "A valid integer is required."),
    ],
    ids=["int64-max+1", "10**30", "int64-min-1", "1e300"],
)
def test_an_integer_beyond_the_default_bounds_is_refused_naming_the_field(value, message):
    error = refused(Counts, {**COUNTS, "count": value})

    assert error.errors == {"count": [message]}
    assert error.status_code == 400


def test_explicit_bounds_are_kept_and_the_missing_side_gets_the_default():
    assert validate_input(Counts, {**COUNTS, "huge": 10**29}, what="input")["huge"] == 10**29
    assert refused(Counts, {**COUNTS, "huge": 10**30 + 1}).errors == {
        "huge": ["Ensure this value is less than or equal to 1000000000000000000000000000000."]}
    assert refused(Counts, {**COUNTS, "positive": 0}).errors == {
        "positive": ["Ensure this value is greater than or equal to 1."]}
    assert refused(Counts, {**COUNTS, "positive": 2**63}).errors == {
        "positive": ["Ensure this value is less than or equal to 9223372036854775807."]}
    assert refused(CreateNodeForm, {**GOOD_NODE, "inventory_id": 10**30}).errors == {
        "inventory_id": ["Ensure this value is less than or equal to 9223372036854775807."]}
    assert refused(CreateNodeForm, {**GOOD_NODE, "inventory_id": -1}).errors == {
        "inventory_id": ["Ensure this value is greater than or equal to 1."]}
    # The declared form is untouched: the defaults live on each validation's own copy of the fields.
    assert CreateNodeForm().fields["inventory_id"].max_value is None
    assert Counts().fields["count"].min_value is None


def test_integers_in_lists_and_nested_forms_get_the_default_bounds_too():
    class Inner(serializers.Serializer):
        size = serializers.IntegerField()

    class Outer(serializers.Serializer):
        inner = Inner()
        inners = Inner(many=True, required=False)

    assert refused(Counts, {**COUNTS, "many": [1, 2**63]}).errors == {
        "many": ["1: Ensure this value is less than or equal to 9223372036854775807."]}
    assert refused(Outer, {"inner": {"size": 2**64}}).errors == {
        "inner": ["size: Ensure this value is less than or equal to 9223372036854775807."]}
    assert "inners" in refused(Outer, {"inner": {"size": 1}, "inners": [{"size": -(2**64)}]}).errors


def test_the_schema_shows_the_bounds_the_form_enforces():
    props = json_schema(Counts)["properties"]

    assert (props["count"]["minimum"], props["count"]["maximum"]) == (-(2**63), 2**63 - 1)
    assert (props["positive"]["minimum"], props["positive"]["maximum"]) == (1, 2**63 - 1)
    assert (props["huge"]["minimum"], props["huge"]["maximum"]) == (-(2**63), 10**30)
    assert props["many"]["items"] == {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
    node = json_schema(CreateNodeForm)["properties"]["inventory_id"]
    assert (node["minimum"], node["maximum"]) == (1, 2**63 - 1)
    validator = Draft202012Validator(json_schema(CreateNodeForm))
    assert validator.is_valid({**GOOD_NODE, "inventory_id": 2**63 - 1})
    assert not validator.is_valid({**GOOD_NODE, "inventory_id": 2**63})


def nested(depth: int) -> object:
    """A value `depth` levels of objects deep: {"a": {"a": ... 1}}."""
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def test_input_nested_deeper_than_the_limit_is_refused_naming_the_field():
    class Free(serializers.Serializer):
        data = serializers.JSONField()
        other = serializers.JSONField(required=False)

    # The input object is the first of the 32 levels allowed; its fields hold at most 31.
    assert validate_input(Free, {"data": nested(31)}, what="input")["data"] == nested(31)
    error = refused(Free, {"data": nested(32), "other": [1]})

    assert error.errors == {"data": ["nested too deeply: at most 31 levels of arrays and objects inside a field"]}
    assert "the input is nested too deeply: at most 32 levels" in error.detail
    assert "data" in refused(Free, {"data": nested(5000)}).errors  # deeper than Python's own recursion limit


def test_the_depth_limit_is_a_setting(settings):
    settings.ORCHESTRATOR = {"JSON_MAX_DEPTH": 3}
    free = type("Free", (serializers.Serializer,), {"data": serializers.JSONField()})

    assert validate_input(free, {"data": {"a": [1]}}, what="input") == {"data": {"a": [1]}}
    assert refused(free, {"data": {"a": [[1]]}}).errors == {
        "data": ["nested too deeply: at most 2 levels of arrays and objects inside a field"]}
