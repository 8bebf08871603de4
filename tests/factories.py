"""factory-boy factories for the product model, subscriptions and users."""

from __future__ import annotations

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from subscriptions.models import (
    FixedInput,
    Product,
    ProductBlock,
    ResourceType,
    Subscription,
    SubscriptionInstance,
    SubscriptionInstanceValue,
    SubscriptionLifecycle,
)

# The transitions that bring a new (initial) subscription to each status.
PATH_TO_STATUS: dict[str, list[str]] = {
    SubscriptionLifecycle.INITIAL: [],
    SubscriptionLifecycle.PROVISIONING: ["provision"],
    SubscriptionLifecycle.ACTIVE: ["provision", "activate"],
    SubscriptionLifecycle.DISABLED: ["provision", "activate", "disable"],
    SubscriptionLifecycle.MIGRATING: ["provision", "activate", "start_migration"],
    SubscriptionLifecycle.TERMINATED: ["terminate"],
}


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.django.Password("correct horse battery staple")


class ResourceTypeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ResourceType
        django_get_or_create = ("resource_type",)

    resource_type = factory.Sequence(lambda n: f"resource_{n}")
    description = factory.Faker("sentence")


class ProductBlockFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProductBlock
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Block{n}")
    description = factory.Faker("sentence")
    tag = "BLOCK"


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Product {n}")
    description = factory.Faker("sentence")
    product_type = "Generic"
    tag = "GEN"


class FixedInputFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FixedInput

    product = factory.SubFactory(ProductFactory)
    name = factory.Sequence(lambda n: f"fixed_{n}")
    value = "1"


class SubscriptionFactory(factory.django.DjangoModelFactory):
    """A subscription; pass `lifecycle="active"` (etc.) to walk it there through real transitions."""

    class Meta:
        model = Subscription
        skip_postgeneration_save = True  # the lifecycle hook saves when it changed something

    description = factory.Faker("sentence", nb_words=4)
    product = factory.SubFactory(ProductFactory)
    customer_id = factory.Sequence(lambda n: f"customer-{n}")
    insync = True

    @factory.post_generation
    def lifecycle(obj: Subscription, create: bool, extracted: str | None, **kwargs: object) -> None:
        if not extracted:
            return
        for name in PATH_TO_STATUS[extracted]:
            getattr(obj, name)(by="factory")
        if create:
            obj.save()


class SubscriptionInstanceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SubscriptionInstance

    subscription = factory.SubFactory(SubscriptionFactory)
    product_block = factory.SubFactory(ProductBlockFactory)
    label = ""


class SubscriptionInstanceValueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SubscriptionInstanceValue

    subscription_instance = factory.SubFactory(SubscriptionInstanceFactory)
    resource_type = factory.SubFactory(ResourceTypeFactory)
    value = "value"


class ProductBlockRelationFactory(factory.django.DjangoModelFactory):
    """Block `in_use_by` holds between `min` and `max` instances of block `depends_on`."""

    class Meta:
        model = "subscriptions.ProductBlockRelation"

    in_use_by = factory.SubFactory(ProductBlockFactory)
    depends_on = factory.SubFactory(ProductBlockFactory)
    min = 1
    max = 2


class SubscriptionInstanceRelationFactory(factory.django.DjangoModelFactory):
    """An instance using another instance of the same subscription as an item of one of its fields."""

    class Meta:
        model = "subscriptions.SubscriptionInstanceRelation"

    in_use_by = factory.SubFactory(SubscriptionInstanceFactory)
    depends_on = factory.SubFactory(
        SubscriptionInstanceFactory, subscription=factory.SelfAttribute("..in_use_by.subscription")
    )
    domain_model_attr = "ports"
    order_id = factory.Sequence(lambda n: n)


# --- workflow rows and processes (for the API's views of products and subscriptions) ---------------
# By model label, not import: the factories above serve tests of the subscriptions app alone too.
class WorkflowFactory(factory.django.DjangoModelFactory):
    """A Workflow row, as sync_workflows would write it for a workflow declared in code."""

    class Meta:
        model = "workflows.Workflow"
        django_get_or_create = ("name",)
        skip_postgeneration_save = True  # the products hook writes the M2M table, not the row

    name = factory.Sequence(lambda n: f"test_workflow_{n}")
    target = "modify"
    description = factory.Faker("sentence", nb_words=4)

    @factory.post_generation
    def products(obj: object, create: bool, extracted: list[Product] | None, **kwargs: object) -> None:
        if create and extracted:
            obj.products.set(extracted)  # type: ignore[attr-defined]


class ProcessFactory(factory.django.DjangoModelFactory):
    """A process row; pass `status=` to start it there (the status is only protected once loaded)."""

    class Meta:
        model = "processes.Process"
        skip_postgeneration_save = True

    workflow = factory.SubFactory(WorkflowFactory)
    created_by = "factory"
    last_step = "Start"

    @factory.post_generation
    def leased(obj: object, create: bool, extracted: bool | None, **kwargs: object) -> None:
        """`leased=True`: a live run holds the process (a worker is in the middle of it)."""
        if extracted and create:
            from datetime import timedelta

            from django.apps import apps
            from django.utils import timezone

            apps.get_model("processes", "ProcessLease").objects.create(
                process=obj, owner="factory-run", expires_at=timezone.now() + timedelta(minutes=5)
            )


class ProcessSubscriptionFactory(factory.django.DjangoModelFactory):
    """The link between a process and a subscription it works on."""

    class Meta:
        model = "processes.ProcessSubscription"

    process = factory.SubFactory(ProcessFactory)
    subscription = factory.SubFactory(SubscriptionFactory)


class ProcessStepFactory(factory.django.DjangoModelFactory):
    """A row of a process's step log: `seconds=` sets how long the step took (it ended now)."""

    class Meta:
        model = "processes.ProcessStep"
        exclude = ("seconds",)

    process = factory.SubFactory(ProcessFactory)
    name = factory.Sequence(lambda n: f"Step {n}")
    status = "success"
    created_by = "factory"
    seconds = 0.0
    completed_at = factory.LazyFunction(timezone.now)
    started_at = factory.LazyAttribute(lambda step: step.completed_at - timedelta(seconds=step.seconds))


def api_token(user=None, *, expires_in=None):
    """The key of a new API token for `user` (a new user when None), as `manage.py create_api_token` issues it.

    `expires_in`: a timedelta; None (the default here) for the configured default expiry.
    """
    from subscriptions import api_tokens

    user = user or UserFactory()
    if expires_in is None:
        return api_tokens.create_token(user.get_username()).key
    return api_tokens.create_token(user.get_username(), expires_in).key
