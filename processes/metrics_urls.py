"""The route of /metrics (outside /api/: a Prometheus page, not part of the REST API)."""

from __future__ import annotations

from django.urls import path

from processes.metrics_view import metrics_view

urlpatterns = [path("", metrics_view, name="metrics")]
