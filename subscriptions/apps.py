"""App configuration for subscriptions."""

from __future__ import annotations

from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "Products and subscriptions"
    default_auto_field = "django.db.models.BigAutoField"
