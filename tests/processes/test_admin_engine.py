"""The engine page of the admin and its widget on the admin index: status, running processes, pause/resume."""

from __future__ import annotations

import pytest
from django.test import Client

from processes.models import EngineSettings
from tests.factories import ProcessFactory, UserFactory

pytestmark = pytest.mark.django_db

ENGINE_URL = "/admin/processes/enginesettings/"


def test_staff_see_the_engine_running_with_a_pause_button(staff_client) -> None:
    response = staff_client.get(ENGINE_URL)

    html = response.content.decode()
    assert response.status_code == 200
    assert response.context["engine"].status == "running"
    assert 'id="engine-status" class="engine-running">running<' in html
    assert 'id="engine-pause"' in html and 'id="engine-resume"' not in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_staff_pause_and_resume_recording_who_and_when(staff_client, staff_user) -> None:
    response = staff_client.post(ENGINE_URL, {"action": "pause"}, follow=True)

    settings = EngineSettings.objects.get()
    assert response.redirect_chain == [(ENGINE_URL, 302)]
    assert settings.paused is True and settings.changed_by == staff_user.username
    html = response.content.decode()
    assert ">paused<" in html and 'id="engine-resume"' in html and 'id="engine-pause"' not in html
    assert staff_user.username in html
    assert any("The engine is paused" in str(m) for m in response.context["messages"])
    paused_at = settings.changed_at

    other = UserFactory(username="second-operator", is_staff=True)  # any staff, as in the API
    client = Client()
    client.force_login(other)
    response = client.post(ENGINE_URL, {"action": "resume"}, follow=True)

    settings.refresh_from_db()
    assert settings.paused is False and settings.changed_by == "second-operator"
    assert settings.changed_at >= paused_at
    assert 'id="engine-pause"' in response.content.decode()


def test_pausing_the_paused_engine_changes_nothing(staff_client) -> None:
    staff_client.post(ENGINE_URL, {"action": "pause"})
    changed_at = EngineSettings.objects.get().changed_at

    response = staff_client.post(ENGINE_URL, {"action": "pause"}, follow=True)

    assert EngineSettings.objects.get().changed_at == changed_at
    assert any("already" in str(m) for m in response.context["messages"])


def test_pausing_while_a_process_runs_shows_pausing(staff_client) -> None:
    ProcessFactory(status="running", leased=True)
    ProcessFactory(status="suspended")

    response = staff_client.post(ENGINE_URL, {"action": "pause"}, follow=True)

    html = response.content.decode()
    assert response.context["engine"].status == "pausing"
    assert 'class="engine-pausing">pausing<' in html
    assert '<td id="engine-running">1</td>' in html
    assert any("1 running process(es) stop before their next step" in str(m) for m in response.context["messages"])
    assert 'id="engine-resume"' in html


def test_an_unknown_action_is_refused(staff_client) -> None:
    assert staff_client.post(ENGINE_URL, {"action": "explode"}).status_code == 400
    assert not EngineSettings.objects.filter(paused=True).exists()


def test_the_switch_needs_the_csrf_token(staff_user) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)

    assert client.post(ENGINE_URL, {"action": "pause"}).status_code == 403
    assert not EngineSettings.objects.filter(paused=True).exists()


def test_non_staff_and_anonymous_are_sent_to_the_login_page(client) -> None:
    for who in (None, UserFactory(username="customer", is_staff=False)):
        if who is not None:
            client.force_login(who)
        for response in (client.get(ENGINE_URL), client.post(ENGINE_URL, {"action": "pause"})):
            assert response.status_code == 302
            assert response["Location"].startswith("/admin/login/")
    assert not EngineSettings.objects.filter(paused=True).exists()


def test_the_admin_index_shows_the_engine_widget(staff_client) -> None:
    ProcessFactory(status="running", leased=True)

    html = staff_client.get("/admin/").content.decode()

    assert 'id="engine-widget"' in html
    assert f'<a href="{ENGINE_URL}">Running</a>' in html
    assert "1 running process<" in html
    assert 'id="content-main"' in html  # the app list is still there


def test_the_engine_page_is_listed_on_the_index_for_staff_without_model_permissions(client) -> None:
    client.force_login(UserFactory(username="plain-staff", is_staff=True))

    html = client.get("/admin/").content.decode()

    assert 'id="engine-widget"' in html and ENGINE_URL in html
    assert client.get(ENGINE_URL).status_code == 200
