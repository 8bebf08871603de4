"""The inline executor: runs the process to its end in the caller (commands, tests)."""

from __future__ import annotations

import uuid

from processes.engine import run_process
from processes.leases import local_owner


class InlineExecutor:
    # The run happens in this thread, right after the creating transaction: the process is claimed for
    # this thread from its creation (leases.local_owner), so the run needs no claim of its own.
    runs_here = True

    def submit(self, process_id: uuid.UUID) -> None:
        run_process(process_id, owner=local_owner())
