"""The workflows app's REST API (under /api/)."""
