"""URLs the wagtail adapter's tests need (included at the root by urls.py).

The Wagtail admin at ``/cms/``, pages under ``/pages/`` (never a catch-all at the root:
these patterns come first in the root URLconf).
"""

from django.urls import include, path
from wagtail import urls as wagtail_urls
from wagtail.admin import urls as wagtailadmin_urls

urlpatterns: list = [
    path("cms/", include(wagtailadmin_urls)),
    path("pages/", include(wagtail_urls)),
]
