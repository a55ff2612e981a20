"""Test settings for the cdp adapter (INSTALLED_APPS additions and its own settings)."""

EXTRA_APPS_CDP: list[str] = []
