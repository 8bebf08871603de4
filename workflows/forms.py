"""Input forms (DRF serializers): validation with field-level messages and JSON Schema for frontends."""

from __future__ import annotations

import logging
import re
from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from rest_framework import fields as f
from rest_framework import serializers

from orchestrator_site.errors import InvalidInput
from orchestrator_site.parsers import max_json_depth, nesting_depth, too_deep_message

logger = logging.getLogger(__name__)

# The bounds of an integer field that declares none of its own: the signed 64-bit range. Beyond it a number
# would pass the form and fail later, far from the user: in a bigint column, in another system's API, or
# in a client that reads JSON numbers as 64-bit integers or doubles. An explicit min_value/max_value wins.
INTEGER_MIN = -(2**63)
INTEGER_MAX = 2**63 - 1


def integer_bounds(field: f.IntegerField) -> tuple[Any, Any]:
    """(minimum, maximum) of an integer field: its own, or the signed 64-bit range where it declares none."""
    low = field.min_value if field.min_value is not None else INTEGER_MIN
    high = field.max_value if field.max_value is not None else INTEGER_MAX
    return low, high


def _bound_integers(field: f.Field) -> None:
    """Give every integer field of a bound form (nested ones too) the default bounds it does not declare.

    Done on the form's instance, which DRF builds afresh for every validation: the declared class and its
    explicit bounds are untouched.
    """
    if isinstance(field, f.IntegerField):
        if field.min_value is None:
            field.min_value = INTEGER_MIN
            message = field.error_messages["min_value"].format(min_value=INTEGER_MIN)
            field.validators.append(MinValueValidator(INTEGER_MIN, message=message))
        if field.max_value is None:
            field.max_value = INTEGER_MAX
            message = field.error_messages["max_value"].format(max_value=INTEGER_MAX)
            field.validators.append(MaxValueValidator(INTEGER_MAX, message=message))
    elif isinstance(field, serializers.Serializer):
        for child in field.fields.values():
            _bound_integers(child)
    elif isinstance(field, serializers.ListSerializer | f.ListField | f.DictField):
        _bound_integers(field.child)


def check_form(form: Any, *, where: str) -> None:
    """Refuse, at import time, a form that is not a DRF serializer class."""
    if form is None:
        return
    if not (isinstance(form, type) and issubclass(form, serializers.Serializer)):
        raise TypeError(
            f"{where}: form must be a rest_framework Serializer class (declared once, it serves the command "
            f"line, the API and the admin), got {form!r}"
        )


def validate_input(form: type[serializers.Serializer] | None, data: Any, *, what: str) -> dict[str, Any]:
    """Validated input as plain data, or InvalidInput listing every field at fault. Unknown keys are refused."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{what}: input must be a JSON object, got {type(data).__name__}")
    if form is None:
        if data:
            raise InvalidInput(
                f"{what} takes no input, got {', '.join(sorted(data))}",
                errors={key: ["unknown field"] for key in data},
            )
        return {}
    _refuse_deep_input(data, what=what)
    serializer = form(data=data)
    _bound_integers(serializer)
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(data) - set(serializer.fields))
    for key in unknown:
        errors[key] = [f"unknown field; expected one of: {', '.join(serializer.fields) or 'none'}"]
    if not serializer.is_valid():
        for key, messages in serializer.errors.items():
            errors.setdefault(key, []).extend(_flatten(messages))
    if errors:
        summary = "; ".join(f"{key}: {' '.join(msgs)}" for key, msgs in errors.items())
        raise InvalidInput(f"{what}: invalid input ({summary})", errors=errors)
    # to_representation turns the validated values back into plain JSON types for the state.
    return dict(serializer.to_representation(serializer.validated_data))


def _refuse_deep_input(data: dict[str, Any], *, what: str) -> None:
    """Refuse input nested deeper than ORCHESTRATOR["JSON_MAX_DEPTH"], naming the fields, before any form sees it.

    The input becomes the process state: every later step, log row, page and command reads it back, and
    some of them walk it recursively. The input object itself is the first level.
    """
    limit = max_json_depth()
    if nesting_depth(data, stop_above=limit) <= limit:
        return
    too_deep = sorted(key for key, value in data.items() if nesting_depth(value, stop_above=limit - 1) > limit - 1)
    raise InvalidInput(
        f"{what}: {too_deep_message('the input', limit)} ({', '.join(too_deep)})",
        errors={key: [f"nested too deeply: at most {limit - 1} levels of arrays and objects inside a field"]
                for key in too_deep},
    )


def _flatten(messages: Any) -> list[str]:
    if isinstance(messages, dict):
        return [f"{k}: {m}" for k, v in messages.items() for m in _flatten(v)]
    if isinstance(messages, list):
        return [str(m) for item in messages for m in _flatten(item)] if messages and isinstance(
            messages[0], dict | list) else [str(m) for m in messages]
    return [str(messages)]


def json_schema(form: type[serializers.Serializer] | None, *, title: str = "") -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) describing the form, for a frontend to render."""
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": title,
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }
    if form is None:
        return schema
    for name, field in form().fields.items():
        if field.read_only:
            continue
        schema["properties"][name] = _field_schema(field)
        if field.required:
            schema["required"].append(name)
    return schema


_FORMATS = {
    f.EmailField: "email",
    f.URLField: "uri",
    f.UUIDField: "uuid",
    f.DateField: "date",
    f.DateTimeField: "date-time",
}


def _field_schema(field: f.Field) -> dict[str, Any]:
    if hasattr(field, "json_schema"):
        return field.json_schema()
    out: dict[str, Any] = {}
    if field.label:
        out["title"] = str(field.label)
    if field.help_text:
        out["description"] = str(field.help_text)
    if field.default is not f.empty and not callable(field.default):
        out["default"] = field.default
    if isinstance(field, f.ChoiceField):  # before CharField: MultipleChoice/Choice are not CharFields
        out["enum"] = [key for key in field.choices]
        if isinstance(field, f.MultipleChoiceField):
            out = {"type": "array", "items": {"enum": out.pop("enum")}, "uniqueItems": True, **out}
    elif isinstance(field, f.BooleanField):
        out["type"] = "boolean"
    elif isinstance(field, f.IntegerField):
        out["type"] = "integer"
        _bounds(out, *integer_bounds(field))  # the defaults too: validate_input enforces them
    elif isinstance(field, f.FloatField | f.DecimalField):
        out["type"] = "number"
        _bounds(out, getattr(field, "min_value", None), getattr(field, "max_value", None))
    elif isinstance(field, f.IPAddressField):
        out["type"] = "string"
        out["format"] = {"ipv4": "ipv4", "ipv6": "ipv6"}.get(field.protocol, "ip-address")
    elif isinstance(field, f.ListField):
        out["type"] = "array"
        out["items"] = _field_schema(field.child)
        if field.min_length is not None:
            out["minItems"] = field.min_length
        if field.max_length is not None:
            out["maxItems"] = field.max_length
    elif isinstance(field, f.DictField | f.JSONField):
        out["type"] = "object"
    elif isinstance(field, serializers.Serializer):
        nested = json_schema(type(field))
        out.update({k: v for k, v in nested.items() if k != "$schema" and k != "title"})
    else:
        out["type"] = "string"
        for cls, fmt in _FORMATS.items():
            if isinstance(field, cls):
                out["format"] = fmt
        if getattr(field, "max_length", None) is not None:
            out["maxLength"] = field.max_length
        if getattr(field, "min_length", None) is not None:
            out["minLength"] = field.min_length
        pattern = _pattern(field)
        if pattern is not None:
            out["pattern"] = pattern
    if getattr(field, "allow_null", False):
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
    return out


def _pattern(field: f.Field) -> str | None:
    """The regular expression of a RegexField (or SlugField), when a frontend's (ECMA) regex reads it alike."""
    for validator in field.validators:
        if type(validator) is not RegexValidator or validator.inverse_match:
            continue
        regex = validator.regex
        if regex.flags & ~re.UNICODE or any(token in regex.pattern for token in ("(?P", "\\A", "\\Z")):
            return None  # Python-only syntax or flags: the server-side check still applies
        return regex.pattern
    return None


def _bounds(out: dict[str, Any], low: Any, high: Any) -> None:
    for value, key in ((low, "minimum"), (high, "maximum")):
        if value is not None:
            out[key] = value if isinstance(value, int | float) else float(value)


class ProductField(f.Field):
    """A product of the given product types, chosen by id or by name; stored as its id."""

    default_error_messages = {
        "unknown": "unknown product {value!r}; choose one of: {choices}",
    }

    def __init__(self, product_types: tuple[str, ...], **kwargs: Any) -> None:
        self.product_types = product_types
        super().__init__(**kwargs)

    def _products(self) -> dict[str, str]:
        from subscriptions.models import Product

        queryset = Product.objects.all()
        if self.product_types:
            queryset = queryset.filter(product_type__in=self.product_types)
        return {str(pk): name for pk, name in queryset.values_list("pk", "name")}

    def to_internal_value(self, data: Any) -> str:
        products = self._products()
        text = str(data)
        if text in products:
            return text
        by_name = {name: pk for pk, name in products.items()}
        if text in by_name:
            return by_name[text]
        self.fail("unknown", value=data, choices=", ".join(sorted(products.values())) or "none")
        raise AssertionError  # fail() raises

    def to_representation(self, value: Any) -> str:
        return str(value)

    def json_schema(self) -> dict[str, Any]:
        choices = [
            {"const": pk, "title": name} for pk, name in sorted(self._products().items(), key=lambda item: item[1])
        ]
        if not choices:
            # JSON Schema refuses an empty oneOf; an empty enum says the same: nothing to choose yet.
            return {"type": "string", "title": "Product", "enum": []}
        return {"type": "string", "title": "Product", "oneOf": choices}


def create_form(form: type[serializers.Serializer] | None, product_types: tuple[str, ...],
                name: str) -> type[serializers.Serializer]:
    """The initial form of a create workflow: product, customer and description, then the workflow's own."""
    attrs = {
        "product": ProductField(product_types, help_text="The product to create a subscription of."),
        "customer_id": serializers.CharField(max_length=100, help_text="The customer the subscription is for."),
        "description": serializers.CharField(max_length=500, required=False, allow_blank=True,
                                             help_text="Defaults to the product and customer."),
    }
    base = form or serializers.Serializer
    first = list(attrs)  # DRF's metaclass empties attrs
    combined = type(f"{name}_input", (base,), attrs)
    # DRF puts a base class's fields first; a frontend shows the product and customer first.
    declared = combined._declared_fields
    combined._declared_fields = {**{key: declared[key] for key in first},
                                 **{key: field for key, field in declared.items() if key not in first}}
    return combined
