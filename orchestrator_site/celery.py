"""The Celery app: workers run processes from ids on the broker (`celery -A orchestrator_site worker`)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")

app = Celery("orchestrator_site")
# Every Celery setting lives in Django's settings as CELERY_<NAME> (see settings.py, "Celery").
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
