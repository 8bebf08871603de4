"""Date and time formats of the admin (FORMAT_MODULE_PATH): the exact format of orchestrator_site.humanize."""
