"""The inline executor: runs the process to its end in the caller (commands, tests)."""

from __future__ import annotations

import uuid

from processes.engine import run_process


class InlineExecutor:
    def submit(self, process_id: uuid.UUID) -> None:
        run_process(process_id)
