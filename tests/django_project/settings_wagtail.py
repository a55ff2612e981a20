"""Test settings for the wagtail adapter (INSTALLED_APPS additions and its own settings).

Wagtail's apps, ``persona_wagtail`` and the page models of ``tests.wagtail.testapp``. The
Wagtail admin is served at ``/cms/`` and pages under ``/pages/`` (see ``urls_wagtail.py``),
so nothing here swallows the URLs of the other adapters' tests.
"""

from importlib.util import find_spec

EXTRA_APPS_WAGTAIL: list[str] = [
    "wagtail.sites",
    "wagtail.users",
    "wagtail.snippets",
    "wagtail.documents",
    "wagtail.images",
    "wagtail.search",
    "wagtail.admin",
    "wagtail",
    "modelcluster",
    "taggit",
    *(["django_filters"] if find_spec("django_filters") else []),
    "persona_wagtail",
    "tests.wagtail.testapp",
]

WAGTAIL_SITE_NAME = "persona tests"
WAGTAILADMIN_BASE_URL = "http://testserver"
# Wagtail's own search backend; the database backend needs no service.
WAGTAILSEARCH_BACKENDS = {"default": {"BACKEND": "wagtail.search.backends.database"}}
