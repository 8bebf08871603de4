"""`manage.py bench_search [--count N] [--explain]`: how long the subscription search takes among N subscriptions."""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from django.db.models import QuerySet
from django.test.utils import override_settings
from django.utils import timezone

from subscriptions.models import (
    Product,
    ProductBlock,
    ResourceType,
    Subscription,
    SubscriptionInstance,
    SubscriptionInstanceValue,
)
from subscriptions.search import search_subscriptions

logger = logging.getLogger(__name__)

MAX_COUNT = 10_000_000
# Rows built in Python at a time: bounded memory, whatever --count is.
CHUNK = 10_000
# Rows per INSERT: 2,000 subscriptions of 11 columns stay far below PostgreSQL's 65,535 parameters.
BATCH = 2_000
REPEAT = 3
PAGE = 50  # the API's and the admin's page size
CITIES = [
    "Amsterdam", "Rotterdam", "Utrecht", "Eindhoven", "Groningen", "Tilburg", "Almere", "Breda", "Nijmegen",
    "Apeldoorn", "Haarlem", "Arnhem", "Enschede", "Maastricht", "Leiden", "Dordrecht", "Zoetermeer", "Zwolle",
    "Deventer", "Delft", "Alkmaar", "Heerlen", "Venlo", "Leeuwarden", "Hilversum",
]
ROLES = ["Core router", "Edge router", "Access switch", "Aggregation switch"]
# Twenty subscriptions per customer, as a customer with a few sites would have.
PER_CUSTOMER = 20
RESOURCE_TYPES = ["node_name", "ipv4_loopback", "inventory_id"]
TABLES = [Subscription, SubscriptionInstance, SubscriptionInstanceValue]
TRIGRAM_INDEXES = ["subscription_description_trgm", "subscription_customer_trgm", "instance_value_trgm"]


def _count(raw: str) -> int:
    """An argparse `type=`: a whole number from 1 to MAX_COUNT, or one clear error."""
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_COUNT:,}, not {raw!r}")
    return value


@dataclass
class BenchRows:
    """What one run created, to search and to remove again: all of it hangs off its own product and block."""

    product: Product
    block: ProductBlock
    types: list[ResourceType]
    count: int = 0


@dataclass
class Sample:
    """Known facts about one created subscription (the middle one), from which the searches are made."""

    subscription_id: uuid.UUID
    node_name: str
    customer_id: str
    city: str
    role_word: str


class Command(BaseCommand):
    help = (
        "Create N subscriptions (each with an instance holding a few values), time the subscription search "
        "for a node name, a customer id, description words, an id prefix and a term that matches nothing next "
        "to a primary key lookup, then remove everything it created."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=_count, default=100_000,
                            help=f"How many subscriptions to create (default 100,000, at most {MAX_COUNT:,}).")
        parser.add_argument("--explain", action="store_true",
                            help="Also print the database's plan of each search (EXPLAIN ANALYZE on PostgreSQL).")

    def handle(self, *args: Any, count: int, explain: bool = False, **options: Any) -> None:
        # Checked again for a caller that passes it directly (call_command), skipping argparse's type.
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            raise CommandError(f"--count must be a whole number from 1 to {MAX_COUNT:,}, not {count!r}")
        vendor = connection.vendor
        if vendor not in ("postgresql", "sqlite"):
            raise CommandError(f"the benchmark supports PostgreSQL and SQLite only, not {vendor}")
        out = self.stdout
        settings_dict = connection.settings_dict
        where = f" ({settings_dict['HOST'] or 'local socket'}:{settings_dict['PORT'] or 'default port'})"
        out.write(f"database:  {vendor} {settings_dict['NAME']}{where if vendor != 'sqlite' else ''}")
        # The rows are committed, vacuumed and analyzed before they are searched, as a database that has
        # had them for a while would hold them: searching rows of an open transaction measured two to three
        # times slower. So they are removed afterwards, whatever happens in between (an error, Ctrl-C).
        # Query logging (on whenever DEBUG is) costs time per query that production does not pay.
        with override_settings(DEBUG=False):
            made = self._start()
            try:
                sample = self._create(made, count)
                self._prepare_statistics(vendor)
                rows = self._measure(sample)
                plans = []
                if explain:
                    plans = [(label, self._plan(query, vendor)) for label, _, query in self._searches(sample)]
            finally:
                seconds = self._remove(made)
        self._report(rows, plans)
        out.write(f"removed:   the {made.count:,} subscriptions it created, their instances and values, its product, "
                  f"block and resource types ({seconds:.1f} s)")

    # --- the data ----------------------------------------------------------------------------------
    def _start(self) -> BenchRows:
        token = uuid.uuid4().hex[:8]  # names of its own: no clash with real rows or another run
        with transaction.atomic():
            return BenchRows(
                product=Product.objects.create(name=f"Bench search {token}", product_type="BenchSearch", tag="BENCH"),
                block=ProductBlock.objects.create(name=f"BenchSearchNode {token}", tag="BENCH"),
                types=[ResourceType.objects.create(resource_type=f"bench_search_{name}_{token}")
                       for name in RESOURCE_TYPES],
            )

    def _create(self, made: BenchRows, count: int) -> Sample:
        start, begun = timezone.now() - timedelta(days=365), time.perf_counter()
        middle = count // 2
        sample: Sample | None = None
        for first in range(0, count, CHUNK):
            subscriptions, instances, values = [], [], []
            for i in range(first, min(count, first + CHUNK)):
                city, role = CITIES[i % len(CITIES)], ROLES[i % len(ROLES)]
                node_name = f"{city[:3].lower()}-rt{i:06d}"
                subscription = Subscription(
                    description=f"{role} {city} {i:06d}", product=made.product,
                    customer_id=f"cust-{i // PER_CUSTOMER:06d}", insync=True,
                    start_date=start + timedelta(seconds=i),
                )
                instance = SubscriptionInstance(subscription=subscription, product_block=made.block)
                texts = [node_name, f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", str(100_000 + i)]
                values.extend(
                    SubscriptionInstanceValue(subscription_instance=instance, resource_type=kind, value=text)
                    for kind, text in zip(made.types, texts, strict=True)
                )
                subscriptions.append(subscription)
                instances.append(instance)
                if i == middle:
                    sample = Sample(subscription.subscription_id, node_name, subscription.customer_id, city,
                                    role.split()[0].lower())
            with transaction.atomic():
                Subscription.objects.bulk_create(subscriptions, batch_size=BATCH)
                SubscriptionInstance.objects.bulk_create(instances, batch_size=BATCH)
                SubscriptionInstanceValue.objects.bulk_create(values, batch_size=BATCH)
            made.count += len(subscriptions)
            self.stdout.write(f"  created {made.count:,}/{count:,} subscriptions ({time.perf_counter() - begun:.1f} s)")
        if sample is None:  # cannot happen for count >= 1: the middle one is always created
            raise CommandError("no subscription was created")
        self.stdout.write(
            f"data:      {count:,} subscriptions, each with 1 instance holding {len(RESOURCE_TYPES)} values "
            f"({count * len(RESOURCE_TYPES):,} values), created in {time.perf_counter() - begun:.1f} s"
        )
        return sample

    def _remove(self, made: BenchRows) -> float:
        begun = time.perf_counter()
        # Children first, in chunks: each delete checks what refers to the rows (a process on one of them
        # would stop it, rightly) and holds one chunk of them in memory, not all.
        SubscriptionInstanceValue.objects.filter(resource_type__in=made.types).delete()
        for model, lookup in ((SubscriptionInstance, {"product_block": made.block}),
                              (Subscription, {"product": made.product})):
            pks = list(model.objects.filter(**lookup).values_list("pk", flat=True))
            for first in range(0, len(pks), CHUNK):
                model.objects.filter(pk__in=pks[first:first + CHUNK]).delete()
        ResourceType.objects.filter(pk__in=[kind.pk for kind in made.types]).delete()
        made.block.delete()
        made.product.delete()
        return time.perf_counter() - begun

    def _prepare_statistics(self, vendor: str) -> None:
        # What a database that has had the rows for a while holds: fresh planner statistics and, on
        # PostgreSQL, a visibility map and GIN indexes whose pending list of fast inserts is merged.
        tables = ", ".join(model._meta.db_table for model in TABLES)
        with connection.cursor() as cursor:
            if vendor == "postgresql" and not connection.in_atomic_block:
                cursor.execute(f"VACUUM ANALYZE {tables}")
                done = "VACUUM ANALYZE"
            elif vendor == "postgresql":  # called inside a transaction (a test), where VACUUM cannot run
                cursor.execute(f"ANALYZE {tables}")
                for index in TRIGRAM_INDEXES:
                    cursor.execute("SELECT gin_clean_pending_list(%s::regclass)", [index])
                done = "ANALYZE, GIN pending lists merged"
            else:
                for model in TABLES:
                    cursor.execute(f"ANALYZE {model._meta.db_table}")
                done = "ANALYZE"
        self.stdout.write(f"prepared:  {done} of {tables}")

    # --- the measurements --------------------------------------------------------------------------
    def _searches(self, sample: Sample) -> list[tuple[str, str, QuerySet[Subscription]]]:
        listed = Subscription.objects.select_related("product")
        terms = [
            ("node name (a resource value)", sample.node_name),
            ("customer id", sample.customer_id),
            ("description word", sample.city),
            ("two words", f"{sample.city} {sample.role_word}"),
            ("id prefix (8 hex digits)", str(sample.subscription_id)[:8]),
            ("no match", "zqxj-nothing"),
        ]
        return [
            ("baseline: primary key lookup", str(sample.subscription_id), listed.filter(pk=sample.subscription_id)),
            *((label, term, search_subscriptions(listed, term)) for label, term in terms),
        ]

    def _measure(self, sample: Sample) -> list[tuple[str, str, float, int]]:
        searches = self._searches(sample)
        # One untimed round first (caches filled, plans made, as on a server that has been up), then rounds
        # that each run every search once: a burst of load elsewhere slows all searches alike, not just
        # whichever ran three times in a row at the time.
        for _, _, query in searches:
            _list_page(query)
        timings: list[list[float]] = [[] for _ in searches]
        hits: list[int] = [0 for _ in searches]
        for _ in range(REPEAT):
            for position, (_, _, query) in enumerate(searches):
                begun = time.perf_counter()
                hits[position] = _list_page(query)
                timings[position].append(time.perf_counter() - begun)
        return [
            (label, term, statistics.median(seconds) * 1000, found)
            for (label, term, _), seconds, found in zip(searches, timings, hits, strict=True)
        ]

    def _plan(self, query: QuerySet[Subscription], vendor: str) -> str:
        return query.explain(analyze=True) if vendor == "postgresql" else query.explain()

    def _report(self, rows: list[tuple[str, str, float, int]], plans: list[tuple[str, str]]) -> None:
        out = self.stdout
        out.write(f"uptime:    {_uptime()}")
        out.write(f"timing:    median of {REPEAT} rounds (after an untimed one) of what a list page runs: count() and "
                  f"the first {PAGE} rows, in the list's order")
        width = max(len(label) + len(term) for label, term, _, _ in rows) + 5
        out.write(f"  {'search':<{width}} {'ms':>9} {'hits':>9}")
        for label, term, milliseconds, hits in rows:
            out.write(f"  {f'{label} {term!r}':<{width}} {milliseconds:9.2f} {hits:9,}")
        for label, plan in plans:
            out.write(f"plan of {label}:")
            for line in plan.splitlines():
                out.write(f"  {line}")


def _list_page(query: QuerySet[Subscription]) -> int:
    hits = query.count()
    list(query[:PAGE])
    return hits


def _uptime() -> str:
    """`uptime`'s line (how busy the machine was while measuring), or the load average where it is missing."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        try:
            return "load average: " + ", ".join(f"{load:.2f}" for load in os.getloadavg())
        except OSError:
            return "not available on this system"
