"""The subscription's admin page as processes extend it: its processes, the workflows it may start now,
starting one through its initial form, and "set in sync" for a stuck subscription."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django import forms
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.urls import reverse
from rest_framework import serializers

from orchestrator_site.errors import Conflict, InvalidInput
from processes.admin_forms import JSONFormField, form_for
from processes.admin_subscriptions import SubscriptionProcessesAdmin
from processes.models import InputState, Process, ProcessSubscription
from processes.services import abort_process, set_in_sync, start_process
from subscriptions.models import Subscription, SubscriptionLifecycleEvent
from tests.factories import UserFactory
from workflows.dsl import State, StepList, begin, step
from workflows.registry import modify_workflow, unregister

pytestmark = pytest.mark.django_db(transaction=True)


# --- helpers -------------------------------------------------------------------------------------
def change_url(subscription: Subscription) -> str:
    return reverse("admin:subscriptions_subscription_change", args=[subscription.pk])


def start_url(subscription: Subscription, name: str) -> str:
    return f"/admin/subscriptions/subscription/{subscription.pk}/start/{name}/"


def sync_url(subscription: Subscription) -> str:
    return f"/admin/subscriptions/subscription/{subscription.pk}/set-in-sync/"


def process_url(process_id: Any) -> str:
    return f"/admin/processes/process/{process_id}/change/"


def page_messages(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def sync_events(subscription: Subscription) -> list[SubscriptionLifecycleEvent]:
    return list(SubscriptionLifecycleEvent.objects.filter(subscription=subscription, transition="set in sync"))


class ConfigureForm(serializers.Serializer):
    hostname = serializers.RegexField(r"^[a-z][a-z0-9-]*$", max_length=20, help_text="Lower-case host name.")
    vlan = serializers.IntegerField(min_value=1, max_value=4094)
    role = serializers.ChoiceField(choices=["core", "edge"], required=False)
    enabled = serializers.BooleanField(default=False)
    speed = serializers.DecimalField(max_digits=5, decimal_places=1, required=False)
    address = serializers.IPAddressField(protocol="ipv4", required=False)
    ticket = serializers.UUIDField(required=False)
    window = serializers.DateField(required=False)
    at = serializers.DateTimeField(required=False)
    tags = serializers.ListField(child=serializers.CharField(), required=False)

    def validate_vlan(self, value: int) -> int:
        # A rule only the serializer knows: the admin must show it on the field, like the API.
        if value == 13:
            raise serializers.ValidationError("VLAN 13 is reserved.")
        return value


@step("Configure")
def configure(hostname: str, vlan: int) -> State:
    return {"configured": f"{hostname}/{vlan}"}


@pytest.fixture
def t_configure():
    @modify_workflow("Admin test: configure a node", initial_input_form=ConfigureForm, product_types=["Node"])
    def t_admin_configure() -> StepList:
        return begin >> configure

    yield t_admin_configure
    unregister("t_admin_configure")


@pytest.fixture
def operator(db):
    """A staff user who may see subscriptions but not run processes."""
    user = UserFactory(username="viewer", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_subscription"))
    return user


# --- the page ------------------------------------------------------------------------------------
def test_the_admin_site_uses_the_processes_subclass() -> None:
    assert type(admin.site._registry[Subscription]) is SubscriptionProcessesAdmin


def test_page_lists_processes_and_workflows_allowed_or_not_with_reasons(staff_client, active_node) -> None:
    holder = start_process("modify_node", subscription_id=active_node.pk, by="alice")
    assert holder.status == "suspended"

    response = staff_client.get(change_url(active_node))

    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="subscription-processes"' in html
    assert process_url(holder.process_id) in html and "modify_node" in html and "suspended" in html
    rows = {row["spec"].name: row for row in response.context["startable_workflows"]}
    # modify_note is usable while out of sync; modify_node is not, and says which process holds it.
    assert rows["modify_note"]["allowed"] is True and rows["modify_note"]["reasons"] == []
    assert f'id="start-modify_note" class="button" href="{start_url(active_node, "modify_note")}"' in html
    assert rows["modify_node"]["allowed"] is False
    assert any(f"process {holder.process_id} (modify_node, suspended)" in r for r in rows["modify_node"]["reasons"])
    assert 'id="start-modify_node"' not in html
    assert f"process {holder.process_id} (modify_node, suspended) is running on it" in html
    # Workflows of other products are not listed.
    assert "Port" not in "".join(rows)
    # Out of sync, so the set-in-sync button is there.
    assert 'id="action-set-in-sync"' in html


def test_a_subscription_in_sync_has_no_set_in_sync_button_and_its_workflows_are_startable(
    staff_client, active_node
) -> None:
    html = staff_client.get(change_url(active_node)).content.decode()

    assert 'id="action-set-in-sync"' not in html
    for name in ("modify_node", "terminate_node", "validate_node", "modify_note"):
        assert f'id="start-{name}"' in html
    assert "No process has worked on this subscription." in html


def test_a_workflow_that_is_not_allowed_cannot_be_started_by_its_url(staff_client, active_node) -> None:
    start_process("modify_node", subscription_id=active_node.pk, by="alice")
    before = Process.objects.count()

    response = staff_client.post(start_url(active_node, "modify_node"), {}, follow=True)

    assert response.redirect_chain[-1][0] == change_url(active_node)
    assert any("cannot start modify_node" in m and "out of sync" in m for m in page_messages(response))
    assert Process.objects.count() == before
    assert staff_client.get(start_url(active_node, "no_such_workflow")).status_code == 404
    assert staff_client.get(start_url(active_node, "task_check_products")).status_code == 404


# --- starting through the initial form -----------------------------------------------------------
def test_the_initial_form_is_rendered_as_an_admin_form(staff_client, active_node, t_configure) -> None:
    response = staff_client.get(start_url(active_node, "t_admin_configure"))

    assert response.status_code == 200
    html = response.content.decode()
    assert '<button id="confirm" type="submit"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    fields = response.context["form"].fields
    expected = {
        "hostname": forms.RegexField, "vlan": forms.IntegerField, "role": forms.ChoiceField,
        "enabled": forms.BooleanField, "speed": forms.DecimalField, "address": forms.GenericIPAddressField,
        "ticket": forms.UUIDField, "window": forms.DateField, "at": forms.DateTimeField, "tags": JSONFormField,
    }
    assert {name: type(field) for name, field in fields.items()} == expected
    assert fields["hostname"].required and not fields["role"].required and not fields["enabled"].required
    assert (fields["vlan"].min_value, fields["vlan"].max_value) == (1, 4094)
    assert "Lower-case host name." in html
    assert 'class="form-row' in html  # the admin's own form markup


def test_unknown_drf_fields_become_text_fields() -> None:
    class Odd(serializers.Serializer):
        thing = serializers.HiddenField(default="x")  # not a field a person fills in: read as text
        note = serializers.CharField(max_length=5000, allow_blank=True)

    form = form_for(Odd)
    assert isinstance(form.fields["thing"], forms.CharField)
    assert isinstance(form.fields["note"].widget, forms.Textarea) and not form.fields["note"].required


def test_invalid_input_shows_field_errors_and_creates_nothing(staff_client, active_node, t_configure) -> None:
    before = Process.objects.count()

    # Refused by the form itself (the pattern) ...
    response = staff_client.post(start_url(active_node, "t_admin_configure"), {"hostname": "BAD!", "vlan": "10"})
    assert response.status_code == 200
    assert "hostname" in response.context["form"].errors
    assert "Please correct the error below." in response.content.decode()

    # ... and by the serializer, through the service: the error lands on the field all the same.
    response = staff_client.post(start_url(active_node, "t_admin_configure"), {"hostname": "rtr", "vlan": "13"})
    assert response.status_code == 200
    assert response.context["form"].errors["vlan"] == ["VLAN 13 is reserved."]
    assert "VLAN 13 is reserved." in response.content.decode()

    assert Process.objects.count() == before
    active_node.refresh_from_db()
    assert active_node.insync is True


def test_deeply_nested_json_in_a_form_field_is_a_field_error_not_a_500(staff_client, active_node, t_configure) -> None:
    before = Process.objects.count()

    for tags, message in (
        ("[" * 20000 + "]" * 20000, "the value is nested too deeply: at most 32 levels"),  # past Python's recursion
        ("[" * 40 + "]" * 40, "nested too deeply: at most 31 levels"),  # parsed, then refused by the service
    ):
        response = staff_client.post(start_url(active_node, "t_admin_configure"),
                                     {"hostname": "rtr", "vlan": "10", "tags": tags})

        assert response.status_code == 200
        assert message in response.context["form"].errors["tags"][0]
    assert Process.objects.count() == before


def test_an_integer_field_without_bounds_gets_the_64_bit_range_in_the_admin_form_too() -> None:
    class Counted(serializers.Serializer):
        count = serializers.IntegerField()
        vlan = serializers.IntegerField(min_value=1, max_value=4094)

    form = form_for(Counted, data={"count": str(2**63), "vlan": "4094"})

    assert (form.fields["count"].min_value, form.fields["count"].max_value) == (-(2**63), 2**63 - 1)
    assert (form.fields["vlan"].min_value, form.fields["vlan"].max_value) == (1, 4094)
    assert form.errors == {"count": ["Ensure this value is less than or equal to 9223372036854775807."]}


def test_valid_input_starts_the_process_and_redirects_to_it(staff_client, staff_user, active_node,
                                                             t_configure) -> None:
    response = staff_client.post(
        start_url(active_node, "t_admin_configure"),
        {"hostname": "rtr-2", "vlan": "42", "role": "", "speed": "", "address": "10.0.0.1", "enabled": "on"},
    )

    process = Process.objects.get(workflow__name="t_admin_configure")
    assert response.status_code == 302
    assert response["Location"] == process_url(process.process_id)
    assert process.status == "completed" and process.created_by == staff_user.username
    assert ProcessSubscription.objects.filter(process=process, subscription=active_node).exists()
    initial = InputState.objects.get(process=process, input_type="initial_state").input
    # Empty optional fields are left out; the others arrive as the serializer gives them.
    assert initial == {"hostname": "rtr-2", "vlan": 42, "enabled": True, "address": "10.0.0.1"}
    after = staff_client.get(change_url(active_node))
    assert any(f"process {process.process_id} is completed" in m for m in page_messages(after))
    assert process_url(process.process_id) in after.content.decode()


def test_a_workflow_without_a_form_starts_with_a_confirmation(staff_client, active_node) -> None:
    response = staff_client.get(start_url(active_node, "validate_node"))
    assert "This workflow takes no input." in response.content.decode()

    response = staff_client.post(start_url(active_node, "validate_node"), {})

    process = Process.objects.get(workflow__name="validate_node")
    assert response["Location"] == process_url(process.process_id)


def test_without_run_process_there_are_no_links_and_the_pages_answer_403(client, operator, active_node) -> None:
    active_node.insync = False
    active_node.save()
    client.force_login(operator)

    response = client.get(change_url(active_node))

    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="startable-workflows"' in html  # what could start is still shown ...
    assert 'id="start-' not in html  # ... but nothing to start it with
    assert 'id="action-set-in-sync"' not in html
    assert client.get(start_url(active_node, "modify_note")).status_code == 403
    assert client.post(start_url(active_node, "modify_note"), {"note": "x"}).status_code == 403
    assert client.get(sync_url(active_node)).status_code == 403
    assert client.post(sync_url(active_node), {"reason": "checked"}).status_code == 403
    assert Process.objects.count() == 0
    active_node.refresh_from_db()
    assert active_node.insync is False and sync_events(active_node) == []


def test_with_run_process_a_plain_staff_user_can_start(client, operator, active_node) -> None:
    operator.user_permissions.add(Permission.objects.get(codename="run_process"))
    client.force_login(operator)

    assert 'id="start-modify_note"' in client.get(change_url(active_node)).content.decode()
    response = client.post(start_url(active_node, "modify_note"), {"note": "call first"})

    assert response.status_code == 302
    active_node.refresh_from_db()
    assert active_node.note == "call first"


# --- set in sync ---------------------------------------------------------------------------------
def test_set_in_sync_is_refused_while_a_process_holds_the_subscription(staff_client, active_node) -> None:
    holder = start_process("modify_node", subscription_id=active_node.pk, by="alice")

    page = staff_client.get(sync_url(active_node))
    assert page.status_code == 200
    assert f"process {holder.process_id} (modify_node, suspended)" in page.content.decode()
    response = staff_client.post(sync_url(active_node), {"reason": "looked fine to me"}, follow=True)

    assert response.redirect_chain[-1][0] == change_url(active_node)
    errors = [str(m) for m in response.context["messages"] if m.level_tag == "error"]
    assert len(errors) == 1 and f"process {holder.process_id} (modify_node, suspended) holds it" in errors[0]
    active_node.refresh_from_db()
    assert active_node.insync is False
    assert sync_events(active_node) == []


def test_set_in_sync_after_the_holder_is_aborted_records_who_and_why(staff_client, staff_user, active_node) -> None:
    holder = start_process("modify_node", subscription_id=active_node.pk, by="alice")
    abort_process(holder.process_id, by="alice", reason="wrong node")
    versions = active_node.version

    page = staff_client.get(change_url(active_node)).content.decode()
    assert f'id="action-set-in-sync" href="{sync_url(active_node)}"' in page
    form = staff_client.get(sync_url(active_node)).content.decode()
    assert '<textarea name="reason"' in form and '<button id="confirm" type="submit"' in form

    # The reason is mandatory.
    response = staff_client.post(sync_url(active_node), {"reason": "  "})
    assert response.status_code == 200
    assert response.context["form"].errors["reason"] == ["This field is required."]
    active_node.refresh_from_db()
    assert active_node.insync is False and sync_events(active_node) == []

    response = staff_client.post(sync_url(active_node), {"reason": "checked the router by hand"}, follow=True)

    assert response.redirect_chain[-1][0] == change_url(active_node)
    assert any("is set in sync" in m for m in page_messages(response))
    active_node.refresh_from_db()
    assert active_node.insync is True and active_node.version > versions
    [event] = sync_events(active_node)
    assert (event.from_status, event.to_status) == ("active", "active")
    assert event.changed_by == staff_user.username and event.reason == "checked the router by hand"
    assert event.process_id is None
    html = response.content.decode()
    assert "checked the router by hand" in html  # in the lifecycle history on the page
    assert 'id="action-set-in-sync"' not in html


def test_set_in_sync_on_a_subscription_in_sync_changes_nothing(staff_client, active_node) -> None:
    response = staff_client.post(sync_url(active_node), {"reason": "why not"}, follow=True)

    assert response.redirect_chain[-1][0] == change_url(active_node)
    assert any("in sync already" in m for m in page_messages(response))
    assert sync_events(active_node) == []


def test_the_set_in_sync_service_refuses_with_409_and_needs_a_reason(active_node) -> None:
    holder = start_process("modify_node", subscription_id=active_node.pk, by="alice")

    with pytest.raises(Conflict) as refused:
        set_in_sync(active_node.pk, by="bob", reason="because")
    assert refused.value.status_code == 409 and str(holder.process_id) in str(refused.value)

    abort_process(holder.process_id, by="alice")
    with pytest.raises(InvalidInput) as missing:
        set_in_sync(active_node.pk, by="bob", reason="")
    assert missing.value.errors == {"reason": ["This field is required."]}

    subscription = set_in_sync(active_node.pk, by="bob", reason="because")
    assert subscription.insync is True
    assert [(e.changed_by, e.reason) for e in sync_events(active_node)] == [("bob", "because")]
    with pytest.raises(Conflict, match="already in sync"):
        set_in_sync(active_node.pk, by="bob", reason="again")


def test_unknown_subscription_is_404(staff_client, catalogue) -> None:
    missing = uuid.uuid4()
    assert staff_client.get(f"/admin/subscriptions/subscription/{missing}/set-in-sync/").status_code == 404
    assert staff_client.get(f"/admin/subscriptions/subscription/{missing}/start/modify_note/").status_code == 404


def test_a_start_from_a_page_made_stale_by_another_change_is_refused(staff_client, active_node) -> None:
    page = staff_client.get(start_url(active_node, "modify_note")).content.decode()
    seen = Subscription.objects.get(pk=active_node.pk).version
    assert f'name="subscription_version" value="{seen}"' in page
    # Someone else changes the subscription while the form is open.
    start_process("modify_note", subscription_id=active_node.pk, user_input={"note": "from elsewhere"})

    response = staff_client.post(start_url(active_node, "modify_note"),
                                 {"note": "mine", "subscription_version": str(seen)})

    assert response.status_code == 302 and response["Location"] == change_url(active_node)
    assert any(f"stale: you saw version {seen}" in m for m in page_messages(staff_client.get(change_url(active_node))))
    assert Subscription.objects.get(pk=active_node.pk).note == "from elsewhere"
    assert Process.objects.filter(workflow__name="modify_note").count() == 1
