"""This app's workflows (the system tasks), found by autodiscovery like any app's `workflows` module."""

from __future__ import annotations

from processes import system_tasks  # noqa: F401
