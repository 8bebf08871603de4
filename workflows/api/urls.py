"""API routes for workflows."""

from __future__ import annotations

from django.urls import path

from workflows.api.views import WorkflowDetailView, WorkflowListView

urlpatterns = [
    path("workflows/", WorkflowListView.as_view(), name="api-workflow-list"),
    path("workflows/<str:name>/", WorkflowDetailView.as_view(), name="api-workflow-detail"),
]
