"""The processes app's REST API (under /api/)."""
