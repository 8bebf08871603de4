"""Fuzz every operation of the OpenAPI schema against a live server: no 5xx, every response as documented."""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import tests.processes.wait_flows  # noqa: F401  (t_callback: a process awaiting a callback to fuzz)
from processes.engine_settings import set_engine_paused
from processes.models import ProcessSubscription
from processes.services import start_process
from subscriptions.models import Product
from tests.factories import UserFactory, api_token
from workflows.node.demo import load_demo_products
from workflows.sync import sync_workflows

# Examples per operation and generation mode: enough to reach every parameter and body shape, few enough
# that the whole run stays well under a minute and a half on two cores.
MAX_EXAMPLES = 20

# Not negative_data_rejection: DRF and django-filter accept some values the schema calls invalid on
# purpose (an empty filter means "no filter", a malformed ?limit= falls back to the default page size).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    ignored_auth,
]


# Each operation's Hypothesis strategy, driven from one test, rather than schemathesis.pytest.from_fixture:
# under pytest 9.2 that integration fails (it sets Function._nodeid, which pytest no longer has), and one
# test that collects every operation's failures reports them all at once.
def fuzz(operation: APIOperation, mode: GenerationMode, token: str, path: dict[str, str] | None = None) -> str | None:
    """Call the operation with generated data in one mode (path parameters fixed if given); its failures, or None."""

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path))
    @settings(
        max_examples=MAX_EXAMPLES,
        # Reproducible: the same cases on every run, and no example database remembered between runs.
        derandomize=True,
        database=None,
        deadline=None,
        # No shrinking: a failure is reported as found, which keeps the run's time bounded.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        try:
            case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS)
        finally:
            # A fuzzed PUT may pause the engine; the cases after it expect it running.
            set_engine_paused(False)

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid (no parameters, no body, or only free-form strings): no negative case.
        if mode is GenerationMode.NEGATIVE:
            return None
        raise
    except (Exception, FailureGroup) as exc:  # report every operation's failures, not only the first
        fixed = f", path {path}" if path else ""
        return f"{operation.label} ({mode.value} data{fixed}):\n{exc}"
    return None


def known_ids(admin: object) -> dict[str, str]:
    """Rows that exist, by the path prefix whose `{id}` they fill: random ids would only ever reach the 404s."""
    node = Product.objects.get(name="Node")
    created = start_process(
        "create_node",
        user_input={"product": str(node.pk), "customer_id": "fuzz", "node_name": "rtr-fuzz", "node_role": "core",
                    "inventory_id": 1},
        by=admin,
    )
    assert created.status == "completed", created.failed_reason
    subscription_id = ProcessSubscription.objects.get(process=created).subscription_id
    # Suspended at its input step, holding the subscription out of sync: resume, abort and retry have work.
    held = start_process("modify_node", subscription_id=subscription_id, by=admin)
    return {
        "/api/products/": str(node.pk),
        "/api/subscriptions/": str(subscription_id),
        "/api/processes/": str(held.process_id),
        "/api/workflows/": "create_node",
    }


def awaiting_callback() -> dict[str, str]:
    """A process awaiting its callback, with the token its action handed out: the callback routes get to
    take an answer (once), refuse it after, and take progress messages, not only answer 404."""
    from tests.processes.wait_flows import FakeSystem

    FakeSystem.reset()
    process = start_process("t_callback")
    assert process.status == "awaiting_callback", process.failed_reason
    return {"id": str(process.process_id), "token": FakeSystem.last("deploy")["token"]}


def path_of_known(operation: APIOperation, ids: dict[str, str],
                  callback: dict[str, str] | None = None) -> dict[str, str] | None:
    names = re.findall(r"{(\w+)}", operation.path)
    if callback is not None and sorted(names) == ["id", "token"]:
        return callback
    prefix = next((prefix for prefix in ids if operation.path.startswith(prefix)), None)
    if len(names) != 1 or prefix is None:
        return None
    return {names[0]: ids[prefix]}


@pytest.mark.django_db(transaction=True)
def test_every_operation_answers_as_its_schema_says(live_server):
    load_demo_products()
    sync_workflows()
    admin = UserFactory(username="fuzzer", is_staff=True, is_superuser=True)
    token = api_token(admin)
    ids = known_ids(admin)
    callback = awaiting_callback()
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert "GET /api/health/" in [operation.label for operation in operations]

    runs: list[tuple[APIOperation, GenerationMode, dict[str, str] | None]] = []
    for operation in operations:
        runs += [(operation, GenerationMode.POSITIVE, None), (operation, GenerationMode.NEGATIVE, None)]
        if (path := path_of_known(operation, ids, callback)) is not None:
            runs.append((operation, GenerationMode.POSITIVE, path))
    failures = [failure for operation, mode, path in runs if (failure := fuzz(operation, mode, token, path))]

    assert not failures, f"{len(failures)} operation(s) broke the schema:\n\n" + "\n\n".join(failures)
