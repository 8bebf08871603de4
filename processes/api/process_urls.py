"""API routes of processes: /api/processes/ (list, start), /api/processes/{id}/ with its actions and steps, status
counts."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from processes.api.callback_views import CallbackProgressView, CallbackView
from processes.api.step_views import ProcessStepDetailView, ProcessStepListView
from processes.api.views import ProcessViewSet

router = SimpleRouter()
router.register("processes", ProcessViewSet, basename="process")

urlpatterns = [
    path("processes/<str:id>/steps/", ProcessStepListView.as_view(), name="process-step-list"),
    path("processes/<str:id>/steps/<int:number>/", ProcessStepDetailView.as_view(), name="process-step-detail"),
    path("processes/<str:id>/callback/<str:token>/", CallbackView.as_view(), name="process-callback"),
    path("processes/<str:id>/callback/<str:token>/progress/", CallbackProgressView.as_view(),
         name="process-callback-progress"),
    *router.urls,
]
