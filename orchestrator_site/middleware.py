"""Middleware: refuse oversized request bodies with 413 before anything reads them."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from orchestrator_site.conf import orchestrator_setting


class BodySizeLimitMiddleware:
    """Answer 413 to a body larger than ORCHESTRATOR["API_MAX_BODY_BYTES"] (by its Content-Length)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = int(orchestrator_setting("API_MAX_BODY_BYTES"))
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"detail": "Content-Length is not a number."}, status=400)
        if length > limit:
            return JsonResponse(
                {"detail": f"request body of {length} bytes is larger than the {limit} bytes allowed"}, status=413
            )
        return self.get_response(request)
