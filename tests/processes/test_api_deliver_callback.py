"""Staff deliver an awaited answer by hand through the API: the same service as the admin, with who and why."""

from __future__ import annotations

import pytest

from processes.models import ProcessStep
from processes.services import start_process
from tests.processes.conftest import log

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {"ok": True, "device": "rtr-1"}


def url(process) -> str:
    return f"/api/processes/{process.process_id}/deliver-callback/"


def test_staff_deliver_an_answer_by_hand_and_the_process_goes_on(fake_system, staff_api, staff_user):
    process = start_process("t_callback")

    response = staff_api.post(url(process), {"payload": GOOD, "reason": "confirmed by the NOC"}, format="json")

    assert response.status_code == 200, response.json()
    process.refresh_from_db()
    assert process.status == "completed"
    row = ProcessStep.objects.get(process=process, status="callback")
    assert (row.created_by, row.error) == (staff_user.username,
                                           f"delivered by hand by {staff_user.username}: confirmed by the NOC")


def test_a_delivery_by_hand_needs_a_reason_and_the_permission_and_an_awaiting_process(fake_system, staff_api, api):
    process = start_process("t_callback")

    no_reason = staff_api.post(url(process), {"payload": GOOD, "reason": " "}, format="json")
    no_payload = staff_api.post(url(process), {"reason": "why"}, format="json")
    not_allowed = api.post(url(process), {"payload": GOOD, "reason": "why"}, format="json")

    assert no_reason.status_code == 400 and "reason" in no_reason.json()["errors"]
    assert no_payload.status_code == 400 and "payload" in no_payload.json()["errors"]
    assert not_allowed.status_code == 403
    process.refresh_from_db()
    assert process.status == "awaiting_callback"
    assert log(process)[-1] == ("Deploy config", "awaiting_callback")

    assert staff_api.post(url(process), {"payload": GOOD, "reason": "by phone"}, format="json").status_code == 200
    again = staff_api.post(url(process), {"payload": GOOD, "reason": "by phone"}, format="json")
    assert again.status_code == 409 and "not awaiting a callback" in again.json()["detail"]
