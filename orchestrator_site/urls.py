"""Root URL configuration."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

admin.site.site_header = "Subscription orchestrator"
admin.site.site_title = "Orchestrator admin"
admin.site.index_title = "Products, subscriptions and processes"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
]
