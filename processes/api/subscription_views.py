"""Actions on a subscription that belong to the processes app: setting a stuck subscription in sync.

Routed under /api/subscriptions/{id}/ with the subscription's own endpoints, but here: it calls
processes.services.set_in_sync (it must know which processes hold the subscription), and the subscriptions
app may not depend on processes.
"""

from __future__ import annotations

import logging

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestrator_site.api import error_responses
from processes.api.serializers import StrictSerializer, TextField
from processes.api.views import CanRunProcesses
from processes.services import set_in_sync
from subscriptions.api.serializers import SubscriptionSerializer

logger = logging.getLogger(__name__)


class SetInSyncSerializer(StrictSerializer):
    # Blank passes here and is refused by the service, which owns the rule (as for the admin and commands).
    reason = TextField(allow_blank=True, max_length=2000,
                       help_text="Required: why the subscription is in sync again (what you checked or fixed); "
                                 "kept in its lifecycle history with your name.")


class SubscriptionSetInSyncView(APIView):
    """Mark an out-of-sync subscription that no process holds in sync again, recording who and why."""

    # The same permission as the process actions: the admin's "Set in sync" asks for it too.
    permission_classes = [permissions.IsAuthenticated, CanRunProcesses]

    @extend_schema(
        tags=["subscriptions"],
        summary="Set a stuck subscription in sync",
        description="For a subscription left out of sync with no process to bring it back (its process was "
                    "aborted): records who and why in its lifecycle history and answers the subscription. "
                    "**400** without a reason; **409** while an unfinished process holds it (let it finish, or "
                    "abort it first) or when it is in sync already; **404** for an unknown id.",
        parameters=[OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        request=SetInSyncSerializer,
        responses={200: SubscriptionSerializer, **error_responses(400, 401, 403, 404, 409)},
    )
    def post(self, request: Request, id: str) -> Response:
        serializer = SetInSyncSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        subscription = set_in_sync(id, by=request.user, reason=serializer.validated_data["reason"])
        return Response(SubscriptionSerializer(subscription).data)
