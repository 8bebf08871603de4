"""Admin forms: a workflow's input form (a DRF serializer) as a Django form, and the action confirmations."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.validators import RegexValidator
from django.forms.fields import InvalidJSONInput
from rest_framework import fields as f
from rest_framework import serializers

from orchestrator_site.errors import InvalidInput
from orchestrator_site.parsers import max_json_depth, nesting_depth, too_deep_message
from workflows.forms import integer_bounds


class JSONFormField(forms.JSONField):
    """Django's JSON form field, with too deep nesting a field error instead of a RecursionError (a 500).

    Anything shallower than the limit but still too deep is the service's to refuse (validate_input).
    """

    def to_python(self, value: Any) -> Any:
        try:
            return super().to_python(value)
        except RecursionError:
            raise forms.ValidationError(too_deep_message("the value", max_json_depth()), code="invalid") from None

    def bound_data(self, data: Any, initial: Any) -> Any:
        try:
            return super().bound_data(data, initial)
        except RecursionError:
            return InvalidJSONInput(data)  # shown back as typed, as for any invalid JSON


def _common(field: f.Field) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        # A boolean is never required in HTML: an unticked box sends nothing and means False.
        "required": bool(field.required) and not isinstance(field, f.BooleanField),
        "label": str(field.label) if field.label else None,
        "help_text": str(field.help_text) if field.help_text else "",
    }
    # The serializer's default shows as the form's first value.
    if field.default is not f.empty and not callable(field.default):
        kwargs["initial"] = field.default
    return kwargs


def _length(field: f.Field) -> dict[str, Any]:
    return {key: getattr(field, key) for key in ("max_length", "min_length") if getattr(field, key, None) is not None}


def _bounds(field: f.Field) -> dict[str, Any]:
    return {key: getattr(field, key) for key in ("max_value", "min_value") if getattr(field, key, None) is not None}


def django_field(field: f.Field) -> forms.Field:
    """The Django form field that shows and reads a DRF serializer field the way the admin shows its own."""
    common = _common(field)
    # Order matters: DRF's ChoiceField, EmailField, RegexField... are not all CharField subclasses,
    # and the specific ones must win over CharField.
    if isinstance(field, f.MultipleChoiceField):
        return forms.MultipleChoiceField(choices=list(field.choices.items()), **common)
    if isinstance(field, f.ChoiceField):
        choices = list(field.choices.items())
        if not field.required or field.allow_blank:
            choices = [("", "---------"), *choices]
            common["required"] = False
        return forms.ChoiceField(choices=choices, **common)
    if isinstance(field, f.BooleanField):
        return forms.BooleanField(**common)
    if isinstance(field, f.IntegerField):
        # The bounds the service enforces, defaults included: the form refuses what the service would.
        low, high = integer_bounds(field)
        return forms.IntegerField(min_value=low, max_value=high, **common)
    if isinstance(field, f.FloatField):
        return forms.FloatField(**_bounds(field), **common)
    if isinstance(field, f.DecimalField):
        return forms.DecimalField(max_digits=field.max_digits, decimal_places=field.decimal_places,
                                  **_bounds(field), **common)
    if isinstance(field, f.EmailField):
        return forms.EmailField(**_length(field), **common)
    if isinstance(field, f.URLField):
        return forms.URLField(**_length(field), **common)
    if isinstance(field, f.IPAddressField):
        return forms.GenericIPAddressField(protocol=field.protocol, **common)
    if isinstance(field, f.UUIDField):
        return forms.UUIDField(**common)
    if isinstance(field, f.DateTimeField):
        return forms.DateTimeField(**common)
    if isinstance(field, f.DateField):
        return forms.DateField(**common)
    if isinstance(field, f.ListField | f.DictField | f.JSONField | serializers.BaseSerializer):
        return JSONFormField(**common)
    if isinstance(field, f.CharField):
        if getattr(field, "allow_blank", False):
            common["required"] = False  # blank is a valid answer: the serializer gets ""
        regexes = [v for v in field.validators if isinstance(v, RegexValidator)]
        if isinstance(field, f.RegexField) and regexes:
            return forms.RegexField(regexes[0].regex, **_length(field), **common)
        if (field.max_length or 0) > 255:  # room to write: a text area, as the admin does for TextField
            common["widget"] = forms.Textarea(attrs={"rows": 4, "cols": 60})
        # SlugField and other patterned text: their regex comes along as a validator.
        return forms.CharField(validators=regexes, **_length(field), **common)
    # Any other field (a custom one, like the product chooser) reads text; the serializer decides.
    return forms.CharField(**common)


def form_for(serializer: type[serializers.Serializer] | None, *, data: Any = None,
             initial: dict[str, Any] | None = None) -> forms.Form:
    """A Django form with a field per writable field of the serializer, filled with `initial`."""
    form = forms.Form(data=data, initial=initial or {})
    form.required_css_class = "required"  # bold labels, as on the admin's own forms
    if serializer is not None:
        for name, field in serializer().fields.items():
            if not field.read_only:
                form.fields[name] = django_field(field)
    return form


def put_errors_on(form: forms.Form, error: InvalidInput) -> None:
    """The service's field errors on the form's fields (the serializer is the judge); the rest above the form."""
    if not error.errors:
        form.add_error(None, error.detail)
    for key, messages in error.errors.items():
        if key in form.fields:
            form.add_error(key, messages)
        else:
            form.add_error(None, [f"{key}: {message}" for message in messages])


def input_from(form: forms.Form) -> dict[str, Any]:
    """The cleaned data to give the serializer: blank optional fields left out, so its defaults apply."""
    return {
        name: value for name, value in form.cleaned_data.items()
        if form.fields[name].required or isinstance(form.fields[name], forms.BooleanField)
        or value not in (None, "", [], {})
    }


class AbortForm(forms.Form):
    required_css_class = "required"
    reason = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Optional; logged with your name on the process's abort step.",
    )


class SkipForm(forms.Form):
    required_css_class = "required"
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Required: why is it safe to go on without this step? Logged with your name on the skipped step.",
    )

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("This field is required.", code="required")
        return reason


class DeliverCallbackForm(forms.Form):
    """The answer staff deliver by hand for an awaited callback: JSON, and where it came from."""

    required_css_class = "required"
    # Not required as a field: `{}`, `[]` and `null` are answers too (Django's empty values); an empty box is not.
    payload = JSONFormField(
        label="Answer (JSON)", required=False, widget=forms.Textarea(attrs={"rows": 8, "cols": 60}),
        help_text="Required: the answer the external system would have sent, as JSON, e.g. "
                  '<code>{"ok": true, "device": "rtr-1"}</code>. The callback step\'s validate checks it.',
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Required: where did this answer come from? Logged with your name on the callback step.",
    )

    def clean_payload(self) -> Any:
        if not str(self.data.get(self.add_prefix("payload"), "")).strip():
            raise forms.ValidationError("This field is required.", code="required")
        payload = self.cleaned_data["payload"]
        limit = max_json_depth()
        if nesting_depth(payload, stop_above=limit) > limit:
            raise forms.ValidationError(too_deep_message("the answer", limit), code="invalid")
        return str(payload) if isinstance(payload, str) else payload  # a JSONString as plain text

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("This field is required.", code="required")
        return reason
