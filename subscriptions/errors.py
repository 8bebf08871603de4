"""Errors about products, subscriptions, their lifecycle and their domain models."""

from __future__ import annotations

from django_fsm import TransitionNotAllowed

from orchestrator_site.errors import Conflict, InvalidInput


class IllegalTransition(Conflict, TransitionNotAllowed):
    """A lifecycle transition that is not allowed from the subscription's current status.

    Also a django-fsm TransitionNotAllowed, so code written against django-fsm keeps working.
    """

    default_detail = "This lifecycle transition is not allowed from the subscription's current status."


class StaleSubscription(Conflict):
    """A save from a copy of the subscription that someone else changed in the meantime."""

    default_detail = "The subscription was changed by someone else since it was read."


class DomainModelError(InvalidInput):
    """A typed domain model refused a value, or its definition does not match the product."""

    default_detail = "The subscription's domain model is invalid."


class RelationConflict(Conflict):
    """A change that would break a relation between subscriptions (a node terminated under an active port)."""

    default_detail = "The change would leave another subscription using one in an incompatible status."
