"""API routes of processes: /api/processes/ (list, start), /api/processes/{id}/ and its actions, status counts."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from processes.api.views import ProcessViewSet

router = SimpleRouter()
router.register("processes", ProcessViewSet, basename="process")

urlpatterns = router.urls
