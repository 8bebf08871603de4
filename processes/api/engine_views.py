"""Views for the engine: health, the pause switch, and the workflows a subscription may start now."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestrator_site.api import ErrorBodySerializer
from processes.engine_settings import EngineState, engine_status, set_engine_paused
from processes.health import health
from processes.services import workflows_for
from subscriptions.services import get_subscription
from workflows.models import Target

logger = logging.getLogger(__name__)


# --- serializers -------------------------------------------------------------------------------------
class StrictBooleanField(serializers.BooleanField):
    """A JSON true or false, nothing else: DRF's BooleanField would also take "yes", "0" or 1."""

    default_error_messages = {"invalid": "Must be a JSON boolean (true or false)."}

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):
            return data
        self.fail("invalid")
        raise AssertionError  # fail() raises


def _inline_enum(values: list[str]) -> dict[str, Any]:
    # Kept inline (the allOf hides it from drf-spectacular's enum extraction): as named components, the
    # many fields called "status" with different choices across the API collide, and spectacular warns.
    return {"allOf": [{"type": "string", "enum": values}]}


@extend_schema_field(_inline_enum(list(EngineState.values)))
class EngineStateField(serializers.CharField):
    pass


@extend_schema_field(_inline_enum([*EngineState.values, "unknown"]))
class HealthEngineField(serializers.CharField):
    pass


@extend_schema_field(_inline_enum(["ok", "unavailable"]))
class OkOrUnavailableField(serializers.CharField):
    pass


class EngineSettingsSerializer(serializers.Serializer):
    paused = serializers.BooleanField(help_text="Whether the engine is paused.")
    status = EngineStateField(
        help_text="running; pausing (paused, but some process is still running a step); paused (none is).",
    )
    running_processes = serializers.IntegerField(min_value=0, help_text="Processes in status running.")
    changed_by = serializers.CharField(allow_blank=True, help_text="Who last paused or resumed the engine.")
    changed_at = serializers.DateTimeField(allow_null=True, help_text="When the engine was last paused or resumed.")


class EngineSettingsUpdateSerializer(serializers.Serializer):
    paused = StrictBooleanField(help_text="true pauses the engine, false resumes it.")

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        # Unknown keys are refused, with the field errors together in one answer.
        errors: dict[str, Any] = {}
        if isinstance(data, Mapping):
            errors = {
                key: [f"unknown field; expected one of: {', '.join(self.fields)}"]
                for key in sorted(set(data) - set(self.fields), key=str)
            }
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if errors and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**errors, **exc.detail}) from None
            raise
        if errors:
            raise serializers.ValidationError(errors)
        return value


class EngineSettingsUpdateSchema(OpenApiSerializerExtension):
    """Say in the schema what the serializer enforces: no key but `paused`."""

    target_class = EngineSettingsUpdateSerializer

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}


@extend_schema_field(_inline_enum(["ok", "stale", "unknown"]))
class SchedulerStateField(serializers.CharField):
    pass


@extend_schema_field(_inline_enum(["ok", "unavailable", "not_used"]))
class BrokerStateField(serializers.CharField):
    pass


class HealthSerializer(serializers.Serializer):
    status = OkOrUnavailableField(
        help_text="ok when the service can do its work; unavailable (with 503) when the database is down, the "
                  "broker is down while the executor is Celery, or a required scheduler is stale.")
    database = OkOrUnavailableField(help_text="Whether the database answers.")
    engine = HealthEngineField(help_text="unknown when the database cannot be read.")
    scheduler = SchedulerStateField(
        help_text="ok when a scheduler completed a tick lately (within SCHEDULER_STALE_SECONDS, at least three "
                  "sweep intervals); stale when none did (or never); unknown when the database cannot be read.")
    scheduler_required = serializers.BooleanField(
        help_text="Whether a stale scheduler makes the service unavailable (ORCHESTRATOR SCHEDULER_REQUIRED).")
    scheduler_last_tick_at = serializers.DateTimeField(
        allow_null=True, help_text="When a scheduler last completed a tick; null if none ever did.")
    broker = BrokerStateField(
        help_text="Whether the Celery broker answers; not_used when the executor is not Celery.")


class LockedRelationSerializer(serializers.Serializer):
    subscription_id = serializers.UUIDField()
    description = serializers.CharField()
    product = serializers.CharField()
    status = serializers.CharField()
    insync = serializers.BooleanField()
    held_by = serializers.UUIDField(required=False, allow_null=True,
                                    help_text="The process holding it; null when it is out of sync with none.")


class SubscriptionWorkflowSerializer(serializers.Serializer):
    name = serializers.CharField()
    target = serializers.ChoiceField(choices=Target.choices)
    description = serializers.CharField()
    allowed = serializers.BooleanField(help_text="Whether the workflow may start on the subscription now.")
    reasons = serializers.ListField(
        child=serializers.CharField(),
        help_text="Why it may not (empty when allowed): out of sync and which process holds it, lifecycle status.",
    )
    locked_relations = LockedRelationSerializer(
        many=True, help_text="Related subscriptions (used by it, or using it) that another process holds or that are "
                             "out of sync: the workflow may start once they are free.")
    in_use_by = LockedRelationSerializer(
        many=True, help_text="For a terminate: the subscriptions that still use this one and must be terminated first.")


# --- permissions -------------------------------------------------------------------------------------
class ReadOrStaffChange(permissions.BasePermission):
    """Any signed-in user may read; only staff may change (anonymous users get 401, others 403)."""

    message = "Only staff may pause or resume the engine."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in permissions.SAFE_METHODS or bool(user.is_staff)


# --- views -------------------------------------------------------------------------------------------
class HealthView(APIView):
    """Liveness and readiness: the database, the engine, the scheduler and the broker. No authentication."""

    # No authentication at all: a load balancer's probe has no credentials, and a stale session or token
    # must not turn a health check into a 401.
    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        tags=["health"],
        auth=[],
        responses={
            200: HealthSerializer,
            503: OpenApiResponse(HealthSerializer, description=(
                "A part the service needs is down: the database; the broker when the executor is Celery; "
                "the scheduler when it is required and has not ticked lately.")),
        },
    )
    def get(self, request: Request) -> Response:
        result = health()
        code = status.HTTP_200_OK if result.ok else status.HTTP_503_SERVICE_UNAVAILABLE
        return Response(HealthSerializer(result.as_dict()).data, status=code, headers={"Cache-Control": "no-store"})


@extend_schema(tags=["engine"])
class EngineSettingsView(APIView):
    """The engine's pause switch. Reading needs a signed-in user; pausing or resuming needs staff."""

    permission_classes = [ReadOrStaffChange]

    @extend_schema(
        responses={200: EngineSettingsSerializer, 401: ErrorBodySerializer},
    )
    def get(self, request: Request) -> Response:
        return Response(EngineSettingsSerializer(engine_status()).data)

    @extend_schema(
        request=EngineSettingsUpdateSerializer,
        responses={
            200: EngineSettingsSerializer,
            400: ErrorBodySerializer,
            401: ErrorBodySerializer,
            403: ErrorBodySerializer,
        },
        examples=[OpenApiExample("pause", value={"paused": True}, request_only=True)],
    )
    def put(self, request: Request) -> Response:
        serializer = EngineSettingsUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = set_engine_paused(serializer.validated_data["paused"], by=request.user)
        return Response(EngineSettingsSerializer(result).data)


class SubscriptionWorkflowsView(APIView):
    """Every workflow for the subscription's product: whether it may start now, and if not, why."""

    @extend_schema(
        tags=["subscriptions"],
        parameters=[OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses={200: SubscriptionWorkflowSerializer(many=True), 401: ErrorBodySerializer, 404: ErrorBodySerializer},
    )
    def get(self, request: Request, id: str) -> Response:
        subscription = get_subscription(id)  # NotFound (404), also for a malformed id
        items = [
            {
                "name": spec.name,
                "target": spec.target,
                "description": spec.description,
                "allowed": not reasons,
                "reasons": [str(reason) for reason in reasons],
                "locked_relations": [item for reason in reasons for item in reason.locked_relations],
                "in_use_by": [item for reason in reasons for item in reason.in_use_by],
            }
            for spec, reasons in workflows_for(subscription, user=request.user)
        ]
        return Response(SubscriptionWorkflowSerializer(items, many=True).data)
