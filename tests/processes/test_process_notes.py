"""Staff's notes on processes: set through the API (PATCH) and the admin, shown in the lists and on the process."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from processes.models import Process, ProcessStep
from processes.services import NOTE_MAX_LENGTH, set_note, start_process
from tests.factories import UserFactory
from tests.processes import flows

# The engine-test workflows run after the starting transaction commits: these tests need real commits.
pytestmark = pytest.mark.django_db(transaction=True)

LONG_NOTE = ("Customer asked to hold the change until the maintenance window on Monday night; call Bob (NOC) "
             "before retrying.")


def api_url(process: Process) -> str:
    return f"/api/processes/{process.pk}/"


def note_url(process: Process) -> str:
    return reverse("admin:processes_process_note", args=[process.pk])


def detail_url(process: Process) -> str:
    return reverse("admin:processes_process_change", args=[process.pk])


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def untouched(process: Process) -> tuple[Any, ...]:
    """What a note must leave as it was: status, position, log, last change."""
    fresh = Process.objects.get(pk=process.pk)
    return (fresh.status, fresh.current_step, fresh.last_modified_at, fresh.failed_reason,
            ProcessStep.objects.filter(process=process).count())


def user_with(*codenames: str, name: str) -> Any:
    user = UserFactory(username=name, is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename, content_type__app_label="processes"))
    return user


@pytest.fixture
def runner(db):
    """Staff with the run permission only: may see processes and leave notes on them."""
    return user_with("run_process", name="runner")


@pytest.fixture
def viewer(db):
    return user_with("view_process", name="viewer")


def as_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def completed_process() -> Process:
    process = start_process("t_writes", by="alice")
    assert process.status == "completed"
    return process


# --- the API -------------------------------------------------------------------------------------------
def test_patch_puts_a_note_on_a_completed_process_and_changes_nothing_else(staff_api):
    process = completed_process()
    before = untouched(process)

    response = staff_api.patch(api_url(process), {"note": f"  {LONG_NOTE}\n"}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["note"] == LONG_NOTE  # trimmed
    assert response.json()["id"] == str(process.pk) and response.json()["status"] == "completed"
    assert untouched(process) == before
    assert staff_api.get(api_url(process)).json()["note"] == LONG_NOTE
    [item] = [i for i in staff_api.get("/api/processes/").json()["results"] if i["id"] == str(process.pk)]
    assert item["note"] == LONG_NOTE


def test_patch_with_a_blank_note_clears_it(staff_api):
    process = completed_process()
    set_note(process.pk, "look at this", by="bob")

    response = staff_api.patch(api_url(process), {"note": "   "}, format="json")

    assert response.status_code == 200 and response.json()["note"] == ""
    assert Process.objects.get(pk=process.pk).note == ""


def test_patch_refuses_anything_but_the_note_and_writes_nothing(staff_api):
    process = completed_process()
    set_note(process.pk, "before", by="bob")
    before = untouched(process)

    for body, field in [({"note": "after", "status": "failed"}, "status"), ({"status": "failed"}, "status"),
                        ({}, "note"), ({"note": None}, "note"), ({"note": 5}, "note"),
                        ({"note": "after", "failed_reason": ""}, "failed_reason")]:
        response = staff_api.patch(api_url(process), body, format="json")
        assert response.status_code == 400, (body, response.json())
        assert field in response.json()["errors"], (body, response.json())

    assert Process.objects.get(pk=process.pk).note == "before"
    assert untouched(process) == before
    assert staff_api.put(api_url(process), {"note": "after"}, format="json").status_code == 405


def test_patch_refuses_a_note_longer_than_the_limit_saying_how_long_it_is(staff_api):
    process = completed_process()

    too_long = staff_api.patch(api_url(process), {"note": "x" * (NOTE_MAX_LENGTH + 1)}, format="json")
    at_the_limit = staff_api.patch(api_url(process), {"note": "y" * NOTE_MAX_LENGTH}, format="json")

    assert too_long.status_code == 400
    assert too_long.json()["errors"]["note"] == [
        f"Ensure this note has at most {NOTE_MAX_LENGTH} characters (it has {NOTE_MAX_LENGTH + 1})."]
    assert at_the_limit.status_code == 200
    assert Process.objects.get(pk=process.pk).note == "y" * NOTE_MAX_LENGTH


def test_patch_needs_the_run_permission_and_a_process_that_exists(api, staff_api):
    process = completed_process()
    runner_api = APIClient()
    runner_api.force_authenticate(user_with("run_process", name="runner"))

    refused = api.patch(api_url(process), {"note": "mine"}, format="json")
    allowed = runner_api.patch(api_url(process), {"note": "mine"}, format="json")

    assert refused.status_code == 403 and "run_process" in refused.json()["detail"]
    assert allowed.status_code == 200
    assert api.get(api_url(process)).json()["note"] == "mine"  # everyone who sees the process sees the note
    missing = staff_api.patch("/api/processes/00000000-0000-0000-0000-000000000000/", {"note": "x"}, format="json")
    assert missing.status_code == 404


def test_the_detail_etag_changes_with_the_note_though_last_modified_at_does_not(staff_api):
    process = completed_process()
    first = staff_api.get(api_url(process))
    tag = first["ETag"]
    assert staff_api.get(api_url(process), HTTP_IF_NONE_MATCH=tag).status_code == 304

    staff_api.patch(api_url(process), {"note": "watch this one"}, format="json")
    after = staff_api.get(api_url(process), HTTP_IF_NONE_MATCH=tag)

    assert after.status_code == 200 and after.json()["note"] == "watch this one"
    assert after.json()["last_modified_at"] == first.json()["last_modified_at"]
    assert after["ETag"] != tag
    assert staff_api.get(api_url(process), HTTP_IF_NONE_MATCH=after["ETag"]).status_code == 304


@pytest.mark.requires_postgres
def test_a_note_while_a_step_holds_the_process_is_409_and_works_once_the_step_ended(staff_api, settings):
    settings.ORCHESTRATOR = {"LOCK_WAIT_SECONDS": 0.2}
    process = completed_process()
    holding, release = threading.Event(), threading.Event()

    def hold_the_row() -> None:
        from django.db import connection, transaction

        try:
            with transaction.atomic():
                Process.objects.select_for_update().get(pk=process.pk)
                holding.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    try:
        assert holding.wait(10)
        busy = staff_api.patch(api_url(process), {"note": "now"}, format="json")
    finally:
        release.set()
        holder.join(30)

    assert busy.status_code == 409
    assert "a worker is running one of its steps right now" in busy.json()["detail"]
    assert Process.objects.get(pk=process.pk).note == ""
    assert staff_api.patch(api_url(process), {"note": "now"}, format="json").status_code == 200


# --- the admin -------------------------------------------------------------------------------------------
def test_staff_add_a_note_on_the_process_page_and_the_list_shows_it_cut_with_the_whole_in_its_title(runner):
    process = completed_process()
    before = untouched(process)
    client = as_client(runner)
    page = client.get(detail_url(process)).content.decode()
    assert f'<form method="post" action="{note_url(process)}" id="process-note-form"' in page
    assert "Add a note" in page

    response = client.post(note_url(process), {"note": LONG_NOTE}, follow=True)

    assert response.redirect_chain == [(detail_url(process), 302)]
    assert messages_of(response) == [f"Note saved on process {process.process_id}."]
    assert re.search(r'id="process-note-text" class="process-note-text">' + re.escape(LONG_NOTE) + "<",
                     response.content.decode())
    assert untouched(process) == before
    listed = client.get(reverse("admin:processes_process_changelist")).content.decode()
    cut = LONG_NOTE[:59] + "…"
    assert re.search(f'<span class="process-note-short" title="{re.escape(LONG_NOTE)}"[^>]*>{re.escape(cut)}</span>',
                     listed)
    [entry] = LogEntry.objects.filter(object_id=str(process.pk))
    assert entry.user == runner and entry.get_change_message() == f'Note changed: "{LONG_NOTE[:99]}…"'


def test_a_note_that_is_too_long_shows_the_error_with_the_text_kept_and_changes_nothing(runner):
    process = completed_process()
    client = as_client(runner)
    text = "a" * (NOTE_MAX_LENGTH + 5)
    assert '<textarea name="note"' in client.get(note_url(process)).content.decode()  # the note's own page

    response = client.post(note_url(process), {"note": text})

    assert response.status_code == 200
    assert response.context["form"].errors["note"] == [
        f"Ensure this note has at most {NOTE_MAX_LENGTH} characters (it has {NOTE_MAX_LENGTH + 5})."]
    assert text in response.content.decode()  # as typed, to shorten
    assert Process.objects.get(pk=process.pk).note == ""
    assert not LogEntry.objects.filter(object_id=str(process.pk)).exists()


def test_saving_the_same_note_again_says_so_and_writes_no_history(runner):
    process = completed_process()
    client = as_client(runner)
    client.post(note_url(process), {"note": "checked"}, follow=True)

    response = client.post(note_url(process), {"note": "checked\r\n"}, follow=True)

    assert messages_of(response) == [f"The note of process {process.process_id} is unchanged."]
    assert LogEntry.objects.filter(object_id=str(process.pk)).count() == 1


def test_clearing_the_note_in_the_admin_says_so(runner):
    process = completed_process()
    set_note(process.pk, "old news", by="bob")

    response = as_client(runner).post(note_url(process), {"note": ""}, follow=True)

    assert messages_of(response) == [f"Note cleared on process {process.process_id}."]
    assert Process.objects.get(pk=process.pk).note == ""
    assert LogEntry.objects.get(object_id=str(process.pk)).get_change_message() == "Note cleared"


def test_a_viewer_sees_the_note_but_cannot_change_it(viewer):
    process = completed_process()
    set_note(process.pk, "<b>do not retry</b>", by="bob")
    client = as_client(viewer)

    page = client.get(detail_url(process)).content.decode()

    assert "&lt;b&gt;do not retry&lt;/b&gt;" in page and "<b>do not retry</b>" not in page
    assert 'id="process-note-form"' not in page
    assert client.get(note_url(process)).status_code == 403
    assert client.post(note_url(process), {"note": "mine"}).status_code == 403
    assert Process.objects.get(pk=process.pk).note == "<b>do not retry</b>"


def test_a_failed_process_gets_a_note_and_keeps_its_failure(runner):
    flows.CONTROL["fail_times"] = 1
    process = start_process("t_writes", by="alice")
    before = untouched(process)

    as_client(runner).post(note_url(process), {"note": "vendor ticket 4711"})

    assert untouched(process) == before
    assert Process.objects.get(pk=process.pk).note == "vendor ticket 4711"
