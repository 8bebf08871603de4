"""ASGI entry point."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from processes.scheduler_thread import serve_here

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")

# This process serves requests: with ORCHESTRATOR["EMBEDDED_SCHEDULER"], Django's setup starts the scheduler
# thread in it (processes/scheduler_thread.py).
serve_here()
application = get_asgi_application()
