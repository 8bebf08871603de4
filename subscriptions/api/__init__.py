"""The subscriptions app's REST API (under /api/)."""
