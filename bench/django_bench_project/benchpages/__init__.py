"""Wagtail pages for the wagtail-personalisation side of the benchmark (installed only
when Wagtail and wagtail-personalisation are)."""
