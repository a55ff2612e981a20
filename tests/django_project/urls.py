from django.contrib import admin
from django.urls import include, path

from . import urls_cdp, urls_email, urls_wagtail, views

urlpatterns = [
    *urls_cdp.urlpatterns,
    *urls_email.urlpatterns,
    *urls_wagtail.urlpatterns,
    path("admin/", admin.site.urls),
    path("persona/", include("persona_django.urls")),
    path("", views.home, name="home"),
    path("plain/", views.plain, name="plain"),
    path("edge/", views.edge, name="edge"),
    path("buy/", views.buy, name="buy"),
    path("login-as/<str:username>/", views.login_as, name="login-as"),
]
