"""The database's record of bad API tokens per client address, shared by every web process (token_throttle.py)."""

from __future__ import annotations

from django.db import models


class BadTokenAttempts(models.Model):
    """The requests with a wrong, expired or revoked API token from one client address in the current window.

    One row per address, kept in the database (not a per-process cache): gunicorn's several processes, and
    several machines, count together. Rows of windows long past are deleted as new failures come in.
    """

    address = models.CharField(max_length=64, unique=True)
    failures = models.PositiveIntegerField(default=0)
    # The first failure of the current window; the window is ORCHESTRATOR["API_BAD_TOKEN_WINDOW_SECONDS"] long.
    window_started = models.DateTimeField(db_index=True)
    # Set when the failures reached the limit: until then every request with a token from here is refused.
    blocked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "bad API token attempts"
        verbose_name_plural = "bad API token attempts"

    def __str__(self) -> str:
        return f"{self.address}: {self.failures} bad token(s) since {self.window_started}"
