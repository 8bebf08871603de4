"""Root URL configuration: the admin, the REST API under /api/, its schema and docs, /metrics, and the error views."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from orchestrator_site.api import api_not_found

admin.site.site_header = "Subscription orchestrator"
admin.site.site_title = "Orchestrator admin"
admin.site.index_title = "Products, subscriptions and processes"

api_patterns = [
    path("", include("subscriptions.api.urls")),
    path("", include("workflows.api.urls")),
    path("", include("processes.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    # Last: any other path ending in a slash is a JSON 404 (with DEBUG on too). Only those: a known path
    # without its slash must still miss, so that APPEND_SLASH redirects it to the endpoint.
    re_path(r"^(?:.*/)?$", api_not_found, name="api-not-found"),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
    # Prometheus's default path, without a slash (processes/metrics_view.py says who may read it).
    path("metrics", include("processes.metrics_urls")),
]

# Under /api/ the JSON error body of the API, never an HTML page; elsewhere (the admin) Django's pages.
handler400 = "orchestrator_site.api.handler400"
handler403 = "orchestrator_site.api.handler403"
handler404 = "orchestrator_site.api.handler404"
handler500 = "orchestrator_site.api.handler500"
