"""How Django shows a date or a moment wherever the project does not format it itself (admin columns, fields).

One format everywhere, with the zone: "2026-11-30 06:18:30 UTC" (orchestrator_site.humanize.EXACT_TIME_FORMAT),
and "2026-11-30" for a date. Input formats stay Django's.
"""

from __future__ import annotations

from orchestrator_site.humanize import EXACT_TIME_FORMAT

DATETIME_FORMAT = EXACT_TIME_FORMAT
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = EXACT_TIME_FORMAT
TIME_FORMAT = "H:i:s"
