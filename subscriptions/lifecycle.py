"""The subscription lifecycle: its statuses, and an FSM field whose refusals say what was refused."""

from __future__ import annotations

from typing import Any

from django.db import models
from django_fsm import FSMField, TransitionNotAllowed

from orchestrator_site.conf import orchestrator_setting
from subscriptions.errors import IllegalTransition


class SubscriptionLifecycle(models.TextChoices):
    INITIAL = "initial", "initial"
    PROVISIONING = "provisioning", "provisioning"
    ACTIVE = "active", "active"
    DISABLED = "disabled", "disabled"
    MIGRATING = "migrating", "migrating"
    TERMINATED = "terminated", "terminated"


class LifecycleField(FSMField):
    """An FSMField that turns django-fsm's bare refusal into one naming the subscription and transition."""

    def change_state(self, instance: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        current = self.get_state(instance)
        try:
            return super().change_state(instance, method, *args, **kwargs)
        except IllegalTransition:
            raise
        except TransitionNotAllowed as exc:
            name = method.__name__
            sources = sorted(str(source) for source in method._django_fsm.transitions)
            raise IllegalTransition(
                f"cannot {name} subscription {instance.pk}: it is {current}, and {name} is allowed only "
                f"from {', '.join(sources)}",
                subscription_id=instance.pk,
                status=current,
                transition=name,
            ) from exc


def actor_name(by: Any) -> str:
    """Who made a change, as recorded in logs: a user's username, a given name, or the system actor."""
    if by is None:
        return str(orchestrator_setting("SYSTEM_ACTOR"))
    username = getattr(by, "get_username", None)
    if callable(username):
        return str(username())
    return str(by)
