"""The inline executor: runs the process to its end in the caller (commands, tests)."""

from __future__ import annotations

import uuid

from processes.engine import run_process


class InlineExecutor:
    # The run happens in this process, right after the creating transaction: the process is leased to
    # it from its creation.
    runs_here = True

    def submit(self, process_id: uuid.UUID) -> None:
        run_process(process_id)
