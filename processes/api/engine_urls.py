"""API routes for health, the engine's pause switch, the workflows a subscription may start, and set-in-sync."""

from __future__ import annotations

from django.urls import path

from processes.api.engine_views import EngineSettingsView, HealthView, SubscriptionWorkflowsView
from processes.api.subscription_views import SubscriptionSetInSyncView

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
    path(
        "subscriptions/<str:id>/set-in-sync/",
        SubscriptionSetInSyncView.as_view(),
        name="api-subscription-set-in-sync",
    ),
]
