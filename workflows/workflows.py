"""This app's workflows, found by autodiscovery like any app's `workflows` module."""

from __future__ import annotations

from workflows import builtin  # noqa: F401
from workflows.node import ports as port_workflows  # noqa: F401
from workflows.node import workflows as node_workflows  # noqa: F401
