"""A small standalone Django project used only by ``bench/bench_django.py``.

Not a test project: it has the pages the benchmark requests (the same page with
``{% personalize %}`` slots and with plain blocks) and, when Wagtail and
wagtail-personalisation are installed, the equivalent Wagtail pages (``benchpages``).
"""
