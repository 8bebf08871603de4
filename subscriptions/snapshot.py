"""A subscription as it is at one moment (columns and domain model values), and the delta between two."""

from __future__ import annotations

import logging
from typing import Any

from subscriptions.errors import DomainModelError
from subscriptions.models import Subscription

logger = logging.getLogger(__name__)

# The subscription's own columns a before/after shows; the version is left out (every save bumps it).
COLUMNS = ("description", "customer_id", "status", "insync", "note", "start_date", "end_date")


def _strip_ids(value: Any) -> Any:
    # Instance ids are storage details: a new block's id is not a change anyone needs to read.
    if isinstance(value, dict):
        return {k: _strip_ids(v) for k, v in value.items() if k != "subscription_instance_id"}
    if isinstance(value, list):
        return [_strip_ids(v) for v in value]
    return value


def snapshot(subscription: Subscription | str) -> dict[str, Any]:
    """The subscription's columns and its domain model values, as JSON-ready data (for a process's state)."""
    from subscriptions.domain import SubscriptionModel  # domain builds on the models; keep this one light

    if not isinstance(subscription, Subscription):
        subscription = Subscription.objects.select_related("product").get(pk=subscription)
    data: dict[str, Any] = {}
    for name in COLUMNS:
        value = getattr(subscription, name)
        data[name] = value.isoformat() if hasattr(value, "isoformat") else value
    data["version"] = subscription.version
    try:
        model_class = SubscriptionModel.model_for(subscription.product)
    except DomainModelError:
        data["blocks"] = {}  # a product without a declared domain model: only its columns
    else:
        try:
            data["blocks"] = _strip_ids(model_class._read(subscription).to_dict())
        except DomainModelError as exc:
            # Stored values that no longer fit the model: the workflow that fixes them must still be able
            # to take the subscription, so the copy says what it could not read instead of failing.
            logger.warning("subscription %s: snapshot without blocks: %s", subscription.subscription_id, exc)
            data["blocks"] = {}
            data["blocks_unreadable"] = str(exc)
    return data


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value:
        for position, item in enumerate(value):
            _flatten(item, f"{prefix}[{position}]", out)
    else:
        out[prefix] = value


def delta(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Each field that differs, as {"field", "old", "new"}; block values under their path (node.node_name).

    A field only one side has shows None on the other (a block added or removed shows each of its values).
    """
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for side, flat in ((before, old), (after, new)):
        columns = {k: v for k, v in side.items() if k not in ("blocks", "version", "blocks_unreadable")}
        _flatten(columns, "", flat)
        _flatten(side.get("blocks") or {}, "", flat)
    fields = list(old) + [f for f in new if f not in old]
    return [
        {"field": field, "old": old.get(field), "new": new.get(field)}
        for field in fields
        if old.get(field) != new.get(field)
    ]
