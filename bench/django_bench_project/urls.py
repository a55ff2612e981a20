from django.conf import settings
from django.urls import include, path

from . import views

urlpatterns = [
    path("persona/", include("persona_django.urls")),
    path("p/personalized/", views.personalized, name="personalized"),
    path("p/plain/", views.plain, name="plain"),
]

if settings.WAGTAIL:
    from wagtail import urls as wagtail_urls

    urlpatterns.append(path("wt/", include(wagtail_urls)))
