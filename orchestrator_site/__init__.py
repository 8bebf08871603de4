"""The Django project: settings, URLs, WSGI/ASGI entry points and shared infrastructure."""
