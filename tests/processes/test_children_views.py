"""Parents and children in the API and the admin: a parent's children per step with their summary, what it waits
for, a child's link to its parent, the list's filters, the cost of a parent's page, and the actions on them."""

from __future__ import annotations

import html as htmllib
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from processes import children as children_module
from processes.models import Process, ProcessStatus
from processes.services import abort_process, resume_process, retry_process, start_process
from tests.factories import ProcessFactory
from tests.processes import compose_flows

# The children run in the executor after the parent's commit: these tests need real commits.
pytestmark = pytest.mark.django_db(transaction=True)

P = ProcessStatus
URL = "/api/processes/"
FAILED_REASON = "Work on the item: the device for item 2 did not answer"


@pytest.fixture(autouse=True)
def no_failing_items():
    compose_flows.FAILING.clear()
    yield
    compose_flows.FAILING.clear()


def fan_out(count: int, tag: str = "t") -> tuple[Process, list[Process]]:
    """A t_fan_out_confirm parent with `count` children, each suspended at its input step; the children in item
    order."""
    parent = start_process("t_fan_out_confirm", user_input={"count": count, "tag": tag}, by="alice")
    kids = list(Process.objects.filter(parent=parent).order_by("child_index"))
    assert len(kids) == count
    return Process.objects.get(pk=parent.pk), kids


def confirm(child: Process) -> None:
    resume_process(child.pk, {"confirm": True}, by="bob")


def two_done_one_failed_two_suspended() -> tuple[Process, list[Process]]:
    """Five children: items 1 and 2 completed, item 3 failed (its child_index is 2), items 4 and 5 suspended."""
    parent, kids = fan_out(5)
    confirm(kids[0])
    confirm(kids[1])
    compose_flows.FAILING.add(2)
    confirm(kids[2])
    return parent, kids


def short(process: Process) -> str:
    return str(process.pk)[:8] + "…"


def admin_page(process: Process | str) -> str:
    pk = process.pk if isinstance(process, Process) else process
    return reverse("admin:processes_process_change", args=[pk])


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", "", html))).strip()


def element(html: str, element_id: str, tag: str = "div") -> str:
    found = re.search(rf'<{tag}[^>]*id="{element_id}"[^>]*>.*?</{tag}>', html, re.S)
    assert found, f"no #{element_id} on the page"
    return found.group(0)


# --- the API ---------------------------------------------------------------------------------------------
def test_a_parent_s_detail_lists_its_children_with_their_statuses_the_summary_and_what_it_waits_for(staff_api):
    parent, kids = two_done_one_failed_two_suspended()

    data = staff_api.get(f"{URL}{parent.pk}/").json()

    assert data["status"] == "awaiting_children"
    assert (data["parent"], data["child_index"], data["child_of"]) == (None, None, None)
    family = data["children"]
    assert family["count"] == 5
    assert family["waiting"] == (
        f"waiting for 5 children of t_child_confirm: 2 completed, 1 failed, 2 suspended; item 3 (process "
        f"{short(kids[2])}) failed: {FAILED_REASON} — retry or skip that child to let this process go on")
    assert family["all_url"] == f"http://testserver{URL}?parent={parent.pk}"
    (step,) = family["steps"]
    assert {key: step[key] for key in ("step", "step_name", "current", "workflow", "count", "counts", "summary",
                                       "replaced", "more")} == {
        "step": 2, "step_name": "Confirm every item", "current": True, "workflow": "t_child_confirm", "count": 5,
        "counts": {"completed": 2, "failed": 1, "suspended": 2}, "summary": "2 completed, 1 failed, 2 suspended",
        "replaced": 0, "more": 0,
    }
    rows = [(row["item"], row["id"], row["status"], row["round"], row["failed_reason"]) for row in step["children"]]
    assert rows == [
        (1, str(kids[0].pk), "completed", 1, ""),
        (2, str(kids[1].pk), "completed", 1, ""),
        (3, str(kids[2].pk), "failed", 1, FAILED_REASON),
        (4, str(kids[3].pk), "suspended", 1, ""),
        (5, str(kids[4].pk), "suspended", 1, ""),
    ]
    assert step["children"][2]["url"] == f"http://testserver{URL}{kids[2].pk}/"


def test_a_child_s_detail_links_to_its_parent_and_the_step_that_started_it(staff_api):
    parent, kids = fan_out(3)

    data = staff_api.get(f"{URL}{kids[1].pk}/").json()

    assert (data["parent"], data["child_index"], data["children"]) == (str(parent.pk), 1, None)
    assert data["child_of"] == {
        "id": str(parent.pk), "url": f"http://testserver{URL}{parent.pk}/", "workflow": "t_fan_out_confirm",
        "status": "awaiting_children", "step": 2, "step_name": "Confirm every item", "item": 2, "round": 1,
        "text": f"child 2 of process {short(parent)} (t_fan_out_confirm), step 2 'Confirm every item'",
    }


def test_the_list_hides_children_lists_only_them_or_one_parent_s_children(staff_api):
    first, first_kids = fan_out(3, "a")
    second, _ = fan_out(2, "b")

    def listed(query: str) -> list[dict]:
        page = staff_api.get(f"{URL}?{query}").json()
        assert page["count"] == len(page["results"])
        return page["results"]

    assert {row["id"] for row in listed("is_child=false")} == {str(first.pk), str(second.pk)}
    assert len(listed("is_child=true")) == 5
    assert len(listed("")) == 7
    mine = listed(f"parent={first.pk}")
    assert sorted((row["child_index"], row["id"], row["parent"]) for row in mine) == [
        (index, str(kid.pk), str(first.pk)) for index, kid in enumerate(first_kids)]
    assert len(listed(f"parent={first.pk}&status=suspended,completed")) == 3  # with the other filters
    assert all(row["parent"] is None and row["child_index"] is None for row in listed("is_child=false"))


def test_a_malformed_parent_is_a_400_naming_it(staff_api):
    response = staff_api.get(URL, {"parent": "nope"})

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["parent"]


def test_a_parent_s_detail_costs_the_same_queries_with_3_or_30_children(staff_api, staff_client):
    few, _ = fan_out(3, "few")
    many, many_kids = fan_out(30, "many")
    compose_flows.FAILING.add(29)
    confirm(many_kids[29])

    def queries(url: str, client) -> int:
        client.get(url)  # the first request of a client fills caches (content types, the session)
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    assert queries(f"{URL}{few.pk}/", staff_api) == queries(f"{URL}{many.pk}/", staff_api)
    assert queries(admin_page(few), staff_client) == queries(admin_page(many), staff_client)


def test_a_parent_s_etag_changes_when_one_of_its_children_moves_and_its_check_stays_one_query(
        staff_api, django_assert_max_num_queries):
    parent, kids = fan_out(2)
    first = staff_api.get(f"{URL}{parent.pk}/")
    etag = first.headers["ETag"]

    with django_assert_max_num_queries(1):  # forced authentication: the process row only
        assert staff_api.get(f"{URL}{parent.pk}/", headers={"If-None-Match": etag}).status_code == 304
    confirm(kids[0])

    changed = staff_api.get(f"{URL}{parent.pk}/", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert changed.json()["children"]["steps"][0]["summary"] == "1 completed, 1 suspended"
    assert Process.objects.get(pk=parent.pk).status == P.AWAITING_CHILDREN  # the parent's own row did not move


def test_a_parent_lists_its_first_children_and_the_failed_ones_after_them_and_says_how_many_more(
        staff_api, staff_client, monkeypatch):
    monkeypatch.setattr(children_module, "CHILDREN_SHOWN", 2)
    parent, kids = fan_out(6)
    compose_flows.FAILING.add(4)
    confirm(kids[4])

    step = staff_api.get(f"{URL}{parent.pk}/").json()["children"]["steps"][0]
    html = staff_client.get(admin_page(parent)).content.decode()

    assert [(row["item"], row["status"]) for row in step["children"]] == [(1, "suspended"), (2, "suspended"),
                                                                          (5, "failed")]
    assert (step["count"], step["more"]) == (6, 3)
    assert text_of(re.search(r'<p class="help children-capped">.*?</p>', html, re.S)[0]) == (
        "Listed: items 1 to 2 and the 1 failed or waiting one after them; 3 more not listed here.")


def test_a_retried_parent_counts_each_item_s_latest_child_and_says_how_many_it_replaced(staff_api):
    parent, kids = fan_out(3)
    abort_process(kids[1].pk, by="alice", reason="wrong port")
    confirm(kids[0])
    confirm(kids[2])
    assert Process.objects.get(pk=parent.pk).status == P.FAILED  # the last child ended: the aborted one fails it

    retry_process(parent.pk, by="alice")

    step = staff_api.get(f"{URL}{parent.pk}/").json()["children"]["steps"][0]
    new = Process.objects.get(parent=parent, child_index=1, child_round=2)
    assert (step["count"], step["summary"], step["replaced"]) == (3, "2 completed, 1 suspended", 1)
    assert [(row["item"], row["id"], row["round"]) for row in step["children"]] == [
        (1, str(kids[0].pk), 1), (2, str(new.pk), 2), (3, str(kids[2].pk), 1)]
    assert staff_api.get(f"{URL}{new.pk}/").json()["child_of"]["text"] == (
        f"child 2 of process {short(parent)} (t_fan_out_confirm), step 2 'Confirm every item', round 2")


def test_a_completed_parent_still_shows_its_parallel_branches_each_with_its_workflow(staff_api, staff_client):
    parent = start_process("t_link_ends", user_input={"tag": "link"}, by="alice")

    data = staff_api.get(f"{URL}{parent.pk}/").json()
    html = staff_client.get(admin_page(parent)).content.decode()

    assert data["status"] == "completed" and data["children"]["waiting"] is None
    (step,) = data["children"]["steps"]
    assert (step["step_name"], step["current"], step["workflow"], step["summary"]) == (
        "Configure both ends", False, "", "2 completed")
    workflows = [row["workflow"] for row in step["children"]]
    assert len(set(workflows)) == 2
    table = element(html, "process-children")
    assert "<th>workflow</th>" in table and all(name in table for name in workflows)


# --- the admin -------------------------------------------------------------------------------------------
def test_the_parent_s_page_shows_its_children_with_the_summary_statuses_and_what_it_waits_for(staff_client):
    parent, kids = two_done_one_failed_two_suspended()

    html = staff_client.get(admin_page(parent)).content.decode()

    waiting = text_of(element(html, "process-waiting-children"))
    assert waiting == (f"Waiting for 5 children of t_child_confirm: 2 completed, 1 failed, 2 suspended; item 3 "
                       f"(process {short(kids[2])}) failed: {FAILED_REASON} — retry or skip that child to let this "
                       f"process go on")
    box = element(html, "process-children")
    assert "5 children: 2 completed, 1 failed, 2 suspended" in text_of(box)
    rows = re.findall(r'<tr class="child-row[^"]*" id="child-2-(\d+)">(.*?)</tr>', box, re.S)
    assert [int(item) for item, _ in rows] == [1, 2, 3, 4, 5]
    failed = dict(rows)["3"]
    assert f'href="{admin_page(kids[2])}"' in failed
    assert '<span class="status-badge status-failed">failed</span>' in failed
    assert FAILED_REASON in failed
    assert re.search(rf'<a href="/admin/processes/process/\?parent={parent.pk}" id="children-all">', html)
    assert 'id="action-abort"' in html and 'id="action-retry"' not in html
    assert re.search(r'id="process-status" class="status-badge status-awaiting_children"', html)


def test_a_child_s_page_links_to_its_parent(staff_client):
    parent, kids = fan_out(3)

    html = staff_client.get(admin_page(kids[2])).content.decode()

    line = element(html, "process-parent", "p")
    assert f'href="{admin_page(parent)}"' in line
    assert text_of(line) == (f"Child 3 of process {short(parent)} (t_fan_out_confirm, awaiting children), step 2 "
                             f"'Confirm every item'")
    assert 'id="process-children"' not in html


def test_the_list_filters_hide_children_or_show_one_parent_s_and_a_child_links_to_its_parent(staff_client):
    parent, kids = fan_out(3)
    other = ProcessFactory(status="completed")
    changelist = reverse("admin:processes_process_changelist")

    top = staff_client.get(f"{changelist}?is_child=false")
    only = staff_client.get(f"{changelist}?is_child=true")
    mine = staff_client.get(f"{changelist}?parent={parent.pk}")
    everyone = staff_client.get(changelist)
    malformed = staff_client.get(f"{changelist}?parent=not-an-id")

    assert {row.pk for row in top.context["cl"].result_list} == {parent.pk, other.pk}
    assert {row.pk for row in only.context["cl"].result_list} == {kid.pk for kid in kids}
    assert {row.pk for row in mine.context["cl"].result_list} == {kid.pk for kid in kids}
    assert everyone.context["cl"].result_count == 5
    assert malformed.status_code == 200 and malformed.context["cl"].result_count == 0
    html = mine.content.decode()
    assert "children of " + str(parent.pk)[:8] in html and "hierarchy" in html
    assert f'child 2 of <a href="{admin_page(parent)}" title="{parent.pk}">{short(parent)}</a>' in html


def test_aborting_an_awaiting_parent_from_the_admin_aborts_its_children_and_says_so_first(staff_client):
    parent, kids = fan_out(3)
    confirm(kids[0])
    url = reverse("admin:processes_process_abort", args=[parent.pk])

    page = staff_client.get(url).content.decode()
    assert text_of(element(page, "abort-children", "p")) == "Its 2 unfinished child processes are aborted with it."

    response = staff_client.post(url, {"reason": "customer cancelled"})

    assert response.status_code == 302
    assert Process.objects.get(pk=parent.pk).status == P.ABORTED
    assert sorted(Process.objects.filter(parent=parent).values_list("child_index", "status")) == [
        (0, "completed"), (1, "aborted"), (2, "aborted")]


def test_a_child_s_abort_page_says_it_fails_the_waiting_parent_s_step(staff_client):
    parent, kids = fan_out(2)

    page = staff_client.get(reverse("admin:processes_process_abort", args=[kids[1].pk])).content.decode()

    line = text_of(element(page, "abort-child-of", "p"))
    assert line.startswith(f"This is child 2 of process {short(parent)} (t_fan_out_confirm), which waits for it at "
                           f"step 'Confirm every item': once its other children have ended, the parent fails that "
                           f"step.")
    assert 'id="abort-children"' not in page


def test_a_parent_s_page_checks_slowly_and_its_first_check_is_a_304(staff_client):
    parent, _ = fan_out(2)

    html = staff_client.get(admin_page(parent)).content.decode()

    tag = re.search(r'<div[^>]*id="process-live"[^>]*>', html, re.S)[0]
    live = dict(re.findall(r'data-(live[\w-]*)="([^"]*)"', tag))
    assert live["live"] == "slow"
    check = staff_client.get(live["live-url"], headers={"If-None-Match": htmllib.unescape(live["live-etag"])})
    assert check.status_code == 304


def test_the_dashboard_counts_the_parents_awaiting_their_children(staff_client):
    fan_out(2)

    html = staff_client.get(reverse("admin:index")).content.decode()

    found = re.search(r'<a id="dashboard-count-awaiting_children" href="([^"]+)"[^>]*>\s*'
                      r'<span class="dashboard-count-number"[^>]*>([\d,]+)</span>', html)
    assert found and found.group(2) == "1"
    assert found.group(1).replace("&amp;", "&") == "/admin/processes/process/?status__exact=awaiting_children"
