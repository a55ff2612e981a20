"""URLs the email adapter's tests need (included at the root by urls.py)."""

from django.urls import include, path

urlpatterns: list = [
    # ESP tracking webhooks, e.g. /anymail/sendgrid/tracking/
    path("anymail/", include("anymail.urls")),
]
