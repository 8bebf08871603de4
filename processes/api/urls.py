"""API routes for processes, engine settings, health, and the workflows allowed on a subscription."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("", include("processes.api.process_urls")),
    path("", include("processes.api.engine_urls")),
]
