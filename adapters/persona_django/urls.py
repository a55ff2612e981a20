"""``path("persona/", include("persona_django.urls"))`` — the endpoints persona.js talks to."""

from django.urls import path

from . import views

app_name = "persona"

urlpatterns = [
    path("decide", views.decide, name="decide"),
    path("consent", views.consent, name="consent"),
    path("event", views.event, name="event"),
]
