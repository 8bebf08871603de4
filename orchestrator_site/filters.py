"""List filters shared by the apps' APIs: a yes/no filter that refuses what is neither."""

from __future__ import annotations

from typing import Any

from django import forms
from django_filters import rest_framework as filters

TRUE = frozenset({"true", "1", "yes", "on"})
FALSE = frozenset({"false", "0", "no", "off"})


class StrictBooleanField(forms.NullBooleanField):
    """true/false (1/0, yes/no, on/off, any case); absent or empty: no filter. Anything else is a 400 naming
    the parameter, not a filter silently dropped: `?is_child=maybe` listing everything looks like an answer."""

    def to_python(self, value: Any) -> bool | None:
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in TRUE:
            return True
        if text in FALSE:
            return False
        raise forms.ValidationError(f"Enter true or false, not {str(value)[:40]!r}.", code="invalid")

    def validate(self, value: Any) -> None:
        pass  # None (no filter) is allowed, as NullBooleanField's own validate allows it


class StrictBooleanFilter(filters.BooleanFilter):
    field_class = StrictBooleanField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # A plain widget: django-filter's BooleanWidget turns what is neither true nor false into None before
        # the field could refuse it.
        kwargs.setdefault("widget", forms.TextInput)
        super().__init__(*args, **kwargs)
