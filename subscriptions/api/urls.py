"""API routes for products and subscriptions."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver
from rest_framework.routers import SimpleRouter

from subscriptions.api.views import ProductViewSet, SubscriptionViewSet

# SimpleRouter, not DefaultRouter: the other apps' routes share /api/, so no app owns an API root view.
router = SimpleRouter()
router.register("products", ProductViewSet, basename="api-product")
router.register("subscriptions", SubscriptionViewSet, basename="api-subscription")

urlpatterns: list[URLPattern | URLResolver] = [*router.urls]
