"""Root URL configuration: the admin, the REST API under /api/, its schema and docs."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

admin.site.site_header = "Subscription orchestrator"
admin.site.site_title = "Orchestrator admin"
admin.site.index_title = "Products, subscriptions and processes"

api_patterns = [
    path("", include("subscriptions.api.urls")),
    path("", include("workflows.api.urls")),
    path("", include("processes.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
]
