"""API routes for health, the engine's pause switch, and the workflows a subscription may start."""

from __future__ import annotations

from django.urls import path

from processes.api.engine_views import EngineSettingsView, HealthView, SubscriptionWorkflowsView

urlpatterns = [
    path("health/", HealthView.as_view(), name="api-health"),
    path("settings/engine/", EngineSettingsView.as_view(), name="api-engine-settings"),
    # Here, not in the subscriptions app: it asks the processes app which workflows may start, and the
    # subscriptions app may not depend on workflows or processes.
    path(
        "subscriptions/<str:id>/workflows/",
        SubscriptionWorkflowsView.as_view(),
        name="api-subscription-workflows",
    ),
]
