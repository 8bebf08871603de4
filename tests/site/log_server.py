"""Run by tests/site/test_logs.py in a process of its own: serve requests with the development server's own
request handler (as `manage.py runserver` does) and print, as JSON on stdout, the X-Request-ID each answer
carried. Its log lines go to stderr exactly as settings.LOGGING writes them."""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.error
import urllib.request

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
django.setup()

from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer, get_internal_wsgi_application  # noqa: E402


def main(sent: dict[str, str | None]) -> dict[str, str | None]:
    server = WSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    server.set_app(get_internal_wsgi_application())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    answered: dict[str, str | None] = {}
    try:
        for name, incoming in sent.items():
            headers = {} if incoming is None else {"X-Request-ID": incoming}
            request = urllib.request.Request(f"http://127.0.0.1:{server.server_address[1]}/no-such-page/{name}/",
                                             headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    answered[name] = response.headers.get("X-Request-ID")
            except urllib.error.HTTPError as exc:  # the 404 asked for: its lines are the ones to look at
                answered[name] = exc.headers.get("X-Request-ID")
    finally:
        server.shutdown()
        server.server_close()
    return answered


if __name__ == "__main__":
    sys.stdout.write(json.dumps(main(json.loads(sys.argv[1]))) + "\n")
