"""The subscription lifecycle: allowed and forbidden transitions, protection, history and versions."""

from __future__ import annotations

import itertools
import threading
import uuid

import pytest
from django.db import connections, transaction
from django_fsm import TransitionNotAllowed

from subscriptions.errors import IllegalTransition, StaleSubscription
from subscriptions.models import Subscription, SubscriptionLifecycle, SubscriptionLifecycleEvent
from subscriptions.services import change_lifecycle
from tests.factories import SubscriptionFactory, UserFactory

S = SubscriptionLifecycle

# Exactly the transitions of DESIGN.md: (method, from, to).
ALLOWED = [
    ("provision", S.INITIAL, S.PROVISIONING),
    ("activate", S.PROVISIONING, S.ACTIVE),
    ("disable", S.ACTIVE, S.DISABLED),
    ("enable", S.DISABLED, S.ACTIVE),
    ("start_migration", S.ACTIVE, S.MIGRATING),
    ("finish_migration", S.MIGRATING, S.ACTIVE),
    ("terminate", S.INITIAL, S.TERMINATED),
    ("terminate", S.PROVISIONING, S.TERMINATED),
    ("terminate", S.ACTIVE, S.TERMINATED),
    ("terminate", S.DISABLED, S.TERMINATED),
]
METHODS = sorted({method for method, _, _ in ALLOWED})
FORBIDDEN = [
    (method, source)
    for method, source in itertools.product(METHODS, list(S))
    if (method, source) not in {(m, s) for m, s, _ in ALLOWED}
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "source", "target"), ALLOWED, ids=[f"{m}-{s}" for m, s, _ in ALLOWED])
def test_allowed_transition_moves_status_and_is_recorded(method, source, target):
    subscription = SubscriptionFactory(lifecycle=source)
    events_before = subscription.lifecycle_events.count()

    getattr(subscription, method)(by="alice")
    subscription.save()

    stored = Subscription.objects.get(pk=subscription.pk)
    assert stored.status == target
    last = stored.lifecycle_events.order_by("-id").first()
    assert stored.lifecycle_events.count() == events_before + 1
    assert (last.transition, last.from_status, last.to_status, last.changed_by) == (method, source, target, "alice")


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "source"), FORBIDDEN, ids=[f"{m}-{s}" for m, s in FORBIDDEN])
def test_forbidden_transition_is_refused_with_subscription_status_and_transition_named(method, source):
    subscription = SubscriptionFactory(lifecycle=source)
    version = Subscription.objects.get(pk=subscription.pk).version

    with pytest.raises(IllegalTransition) as refused:
        getattr(subscription, method)(by="alice")

    message = str(refused.value)
    assert str(subscription.subscription_id) in message
    assert f"it is {source}" in message
    assert method in message
    assert refused.value.status_code == 409
    # Still a django-fsm refusal for code that expects one.
    assert isinstance(refused.value, TransitionNotAllowed)
    stored = Subscription.objects.get(pk=subscription.pk)
    assert (stored.status, stored.version) == (source, version)


@pytest.mark.django_db
def test_every_status_is_reachable_and_terminated_is_final():
    terminated = SubscriptionFactory(lifecycle=S.TERMINATED)
    assert list(terminated.get_available_status_transitions()) == []
    for status in S:
        assert SubscriptionFactory(lifecycle=status).status == status


@pytest.mark.django_db
def test_status_cannot_be_assigned_directly():
    subscription = SubscriptionFactory(lifecycle=S.ACTIVE)

    with pytest.raises(AttributeError, match="Direct status modification is not allowed"):
        subscription.status = S.TERMINATED

    assert Subscription.objects.get(pk=subscription.pk).status == S.ACTIVE


@pytest.mark.django_db
def test_refresh_from_db_works_on_the_protected_status():
    subscription = SubscriptionFactory(lifecycle=S.PROVISIONING)
    other = Subscription.objects.get(pk=subscription.pk)
    other.activate()
    other.save()

    subscription.refresh_from_db()

    assert subscription.status == S.ACTIVE


@pytest.mark.django_db
def test_history_records_who_when_and_which_process_in_order():
    user = UserFactory(username="carol")
    process_id = uuid.uuid4()
    subscription = SubscriptionFactory()

    subscription.provision(by=user, process_id=process_id)
    subscription.save()
    subscription.activate(by=user, process_id=process_id)
    subscription.save()
    subscription.disable()  # no actor: the system
    subscription.save()

    events = list(subscription.lifecycle_events.all())
    assert [(e.from_status, e.to_status) for e in events] == [
        (S.INITIAL, S.PROVISIONING), (S.PROVISIONING, S.ACTIVE), (S.ACTIVE, S.DISABLED),
    ]
    assert [e.changed_by for e in events] == ["carol", "carol", "system"]
    assert [e.process_id for e in events] == [process_id, process_id, None]
    assert events[0].changed_at <= events[1].changed_at <= events[2].changed_at


@pytest.mark.django_db
def test_transition_without_save_records_nothing():
    subscription = SubscriptionFactory()
    subscription.provision(by="alice")

    assert SubscriptionLifecycleEvent.objects.filter(subscription=subscription).count() == 0
    assert Subscription.objects.get(pk=subscription.pk).status == S.INITIAL


@pytest.mark.django_db
def test_activation_sets_start_date_and_termination_sets_end_date():
    subscription = SubscriptionFactory(lifecycle=S.PROVISIONING)
    assert subscription.start_date is None

    change_lifecycle(subscription.pk, S.ACTIVE, by="alice")
    change_lifecycle(subscription.pk, S.TERMINATED, by="alice")

    stored = Subscription.objects.get(pk=subscription.pk)
    assert stored.start_date is not None
    assert stored.end_date is not None and stored.end_date >= stored.start_date


@pytest.mark.django_db
def test_version_increases_on_every_change():
    subscription = SubscriptionFactory()
    first = Subscription.objects.get(pk=subscription.pk).version

    subscription.note = "first note"
    subscription.save()
    subscription.provision()
    subscription.save()
    subscription.insync = False
    subscription.save(update_fields=["insync"])

    assert Subscription.objects.get(pk=subscription.pk).version == first + 3


@pytest.mark.django_db
def test_save_from_a_stale_copy_is_refused_and_keeps_the_other_change():
    subscription = SubscriptionFactory(note="original")
    mine = Subscription.objects.get(pk=subscription.pk)
    theirs = Subscription.objects.get(pk=subscription.pk)
    theirs.note = "theirs"
    theirs.save()

    mine.note = "mine"
    with pytest.raises(StaleSubscription) as refused:
        mine.save()

    assert str(subscription.subscription_id) in str(refused.value)
    assert refused.value.status_code == 409
    stored = Subscription.objects.get(pk=subscription.pk)
    assert stored.note == "theirs"
    assert mine.version == stored.version - 1  # the failed save did not advance the copy's version


@pytest.mark.django_db
def test_stale_transition_writes_no_history():
    subscription = SubscriptionFactory(lifecycle=S.ACTIVE)
    mine = Subscription.objects.get(pk=subscription.pk)
    Subscription.objects.get(pk=subscription.pk).save()  # someone else saves in between

    mine.disable(by="alice")
    with pytest.raises(StaleSubscription):
        mine.save()

    assert not SubscriptionLifecycleEvent.objects.filter(subscription=subscription, transition="disable").exists()


@pytest.mark.django_db
def test_transition_to_finds_the_transition_or_says_where_it_can_go():
    subscription = SubscriptionFactory(lifecycle=S.ACTIVE)

    with pytest.raises(IllegalTransition) as refused:
        subscription.transition_to(S.PROVISIONING)

    assert "from active to provisioning" in str(refused.value)
    assert "disabled, migrating, terminated" in str(refused.value)
    subscription.transition_to(S.DISABLED, by="bob")
    subscription.save()
    assert subscription.lifecycle_events.last().transition == "disable"


@pytest.mark.django_db
def test_change_lifecycle_refuses_unknown_subscription():
    from orchestrator_site.errors import NotFound

    with pytest.raises(NotFound, match="does not exist"):
        change_lifecycle(uuid.uuid4(), S.ACTIVE)


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_lifecycle_changes_are_serialised_by_the_row_lock():
    """Two workers move one subscription at once: one wins, the other sees the new status, not a lost update."""
    subscription = SubscriptionFactory(lifecycle=S.ACTIVE)
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def move(target: str) -> None:
        try:
            barrier.wait(timeout=10)
            with transaction.atomic():
                change_lifecycle(subscription.pk, target, by=target)
            outcomes[target] = "ok"
        except Exception as exc:  # recorded and asserted below
            outcomes[target] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=move, args=(t,)) for t in (S.DISABLED, S.MIGRATING)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    winners = [t for t, o in outcomes.items() if o == "ok"]
    losers = [o for o in outcomes.values() if o != "ok"]
    assert len(winners) == 1, outcomes
    # The loser waited for the lock and then saw the winner's status: a clear refusal, not a stale save.
    assert len(losers) == 1 and isinstance(losers[0], IllegalTransition), outcomes
    stored = Subscription.objects.get(pk=subscription.pk)
    assert stored.status == winners[0]
    assert stored.lifecycle_events.filter(from_status=S.ACTIVE).count() == 1
