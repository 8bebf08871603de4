"""Finding subscriptions by what people know of them: the one search behind the admin's box and the API's `?search=`.

A subscription matches a search term when every word of it is found (case-insensitively, as a substring)
in at least one of: its description, its customer id, a resource value of one of its own instances (a
node name, an address), or its product's name or product type. A term that reads as a subscription id,
whole or its first 8 or more hex digits, also finds that subscription.

On PostgreSQL each word is `column ILIKE '%word%'`, served by the GIN trigram indexes of migration 0004
(pg_trgm), and the places a word may be found are separate subqueries joined by UNION ALL: each part uses
its own index, where one OR across joined tables would read every value row. Words shorter than three
characters hold no trigram, so PostgreSQL reads the whole index (or table) for them. On SQLite the same
query runs with a plain LIKE and no index: it reads every row, which is fine for the embedded database's
sizes, and (as LIKE there does) ignores case for ASCII letters only.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from django.db.models import F, Lookup, QuerySet
from django.utils.text import smart_split, unescape_string_literal

from subscriptions.models import Product, Subscription, SubscriptionInstanceValue

logger = logging.getLogger(__name__)

# A search term that may be (the start of) a subscription id: hex digits, optionally with the dashes
# of the canonical form, optionally followed by the ellipsis the list shows after a short id.
_ID_PREFIX = re.compile(r"^[0-9a-f-]+(?:…|\.\.\.)?$")
# Shorter prefixes would match ids by accident whenever someone searches for a hex-looking word.
MIN_ID_PREFIX_LENGTH = 8


class ContainsIgnoringCase(Lookup):
    """`column ILIKE '%word%'` on PostgreSQL, `column LIKE '%word%'` elsewhere; `%`, `_` and `\\` match themselves.

    Not Django's `icontains`: on PostgreSQL that compares `UPPER(column)`, which no index on the column
    serves, while a trigram index serves ILIKE. Used as an expression, `filter(ContainsIgnoringCase(F("x"),
    word))`, so it is registered on no field.
    """

    lookup_name = "contains_ignoring_case"
    prepare_rhs = False

    def process_rhs(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        rhs, params = super().process_rhs(compiler, connection)
        return rhs, [f"%{connection.ops.prep_for_like_query(params[0])}%"]

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        params = [*lhs_params, *rhs_params]
        if connection.vendor == "postgresql":
            # The backslash is LIKE's escape character there by default.
            return f"{lhs} ILIKE {rhs}", params
        return f"{lhs} LIKE {rhs} ESCAPE '\\'", params


# Each word is one more subquery: a search of hundreds of words would be one enormous query. The API
# refuses more (400); the admin's box searches the first ones.
MAX_SEARCH_WORDS = 10


def search_words(term: str) -> list[str]:
    """The words of a search term, each once: split at whitespace, "a quoted phrase" being one word.

    As the admin reads its search box. NUL characters are dropped: no stored text holds one on PostgreSQL,
    which refuses them in a query.
    """
    words: list[str] = []
    for bit in smart_split(term.replace("\x00", "")):
        if bit.startswith(('"', "'")) and bit[0] == bit[-1]:
            bit = unescape_string_literal(bit)
        if bit and bit not in words:
            words.append(bit)
    return words


def id_filter(search_term: str, field: str) -> dict[str, Any] | None:
    """The filter on the UUID `field` for an id typed in a search box, or None if the term is no id.

    A whole UUID (in any form `uuid.UUID` reads) matches exactly; 8 to 31 hex digits (with or without
    dashes, with or without the trailing ellipsis of a list's short id) match the ids starting with them.
    A prefix is a range of UUIDs (from the prefix padded with 0s to it padded with fs), which the primary
    key's index serves on every database, where comparing the id's text would read every row.
    """
    term = search_term.strip().lower()
    if not term or len(term.split()) != 1:
        return None
    try:
        return {field: uuid.UUID(term)}
    except ValueError:
        pass
    if not _ID_PREFIX.match(term):
        return None
    digits = term.removesuffix("…").removesuffix("...").replace("-", "")
    if not MIN_ID_PREFIX_LENGTH <= len(digits) < 32:
        return None
    # gte and lte rather than range: those a foreign key to the id takes as well.
    return {f"{field}__gte": uuid.UUID(digits.ljust(32, "0")), f"{field}__lte": uuid.UUID(digits.ljust(32, "f"))}


def subscription_id_filter(search_term: str) -> dict[str, Any] | None:
    """The filter that finds subscriptions by an id typed in the search box, or None if it is no id."""
    return id_filter(search_term, "subscription_id")


def subscriptions_with_word(word: str, *, id_term: str | None = None) -> QuerySet[Any]:
    """The ids of the subscriptions in which `word` is found: one query, a UNION ALL of one part per place.

    With `id_term` (the whole search term, when it is this one word), also the subscription it names by id.
    """
    subscriptions = Subscription.objects.order_by()
    products = Product.objects.order_by().filter(
        ContainsIgnoringCase(F("name"), word) | ContainsIgnoringCase(F("product_type"), word)
    )
    parts = [
        subscriptions.filter(ContainsIgnoringCase(F("description"), word)).values("pk"),
        subscriptions.filter(ContainsIgnoringCase(F("customer_id"), word)).values("pk"),
        # Values of the subscription's own instances only: an instance belongs to one subscription.
        SubscriptionInstanceValue.objects.order_by()
        .filter(ContainsIgnoringCase(F("value"), word))
        .values("subscription_instance__subscription_id"),
        # Products are few; a matching one brings its subscriptions through the product's index.
        subscriptions.filter(product__in=products.values("pk")).values("pk"),
    ]
    by_id = subscription_id_filter(id_term) if id_term is not None else None
    if by_id is not None:
        parts.append(subscriptions.filter(**by_id).values("pk"))
    return parts[0].union(*parts[1:], all=True)


def search_subscriptions(queryset: QuerySet[Subscription], term: str) -> QuerySet[Subscription]:
    """The subscriptions of `queryset` that `term` finds (see this module's docstring); all of them for a blank term.

    Each word adds `pk IN (subscriptions_with_word(word))`, so every word must match, each anywhere, and
    each subscription is listed once. The other filters already on `queryset` keep applying, also to a
    subscription found by its id.
    """
    words = search_words(term)
    # An id is a single word; so when the term is one, it is the only word (and may match as text too).
    id_term = term if subscription_id_filter(term) is not None else None
    for word in words[:MAX_SEARCH_WORDS]:
        queryset = queryset.filter(pk__in=subscriptions_with_word(word, id_term=id_term))
    return queryset
