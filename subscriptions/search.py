"""Finding subscriptions by a typed-in id: shared by the admin's search box and the API's `?search=`."""

from __future__ import annotations

import re
import uuid
from typing import Any

# A search term that may be (the start of) a subscription id: hex digits, optionally with the dashes
# of the canonical form, optionally followed by the ellipsis the list shows after a short id.
_ID_PREFIX = re.compile(r"^[0-9a-f-]+(?:…|\.\.\.)?$")
# Shorter prefixes would match ids by accident whenever someone searches for a hex-looking word.
MIN_ID_PREFIX_LENGTH = 8


def subscription_id_filter(search_term: str) -> dict[str, Any] | None:
    """The filter that finds subscriptions by an id typed in the search box, or None if it is no id.

    A whole UUID (in any form `uuid.UUID` reads) matches exactly; 8 to 31 hex digits (with or without
    dashes, with or without the trailing ellipsis of the list's short id) match ids starting with them.
    """
    term = search_term.strip().lower()
    if not term or len(term.split()) != 1:
        return None
    try:
        return {"subscription_id": uuid.UUID(term)}
    except ValueError:
        pass
    if not _ID_PREFIX.match(term):
        return None
    digits = term.removesuffix("…").removesuffix("...").replace("-", "")
    if not MIN_ID_PREFIX_LENGTH <= len(digits) < 32:
        return None
    # Put the dashes where the canonical text of a UUID has them: PostgreSQL compares against that
    # text, and SQLite (which stores bare hex) has Django strip them again.
    groups, start = [], 0
    for size in (8, 4, 4, 4, 12):
        if start < len(digits):
            groups.append(digits[start : start + size])
        start += size
    return {"subscription_id__startswith": "-".join(groups)}
