"""Where the project lives and where it keeps its runtime data (var/: SQLite file, embedded PostgreSQL, static)."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# Read once, here, so the settings and the embedded PostgreSQL's runner (embedded_db.py, which must not
# import the settings: it runs before DATABASE_URL is known) agree on it.
VAR_DIR = Path(os.environ.get("ORCHESTRATOR_VAR_DIR") or BASE_DIR / "var")
