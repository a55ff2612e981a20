from django.apps import AppConfig


class TestAppConfig(AppConfig):
    name = "tests.wagtail.testapp"
    label = "persona_wagtail_testapp"
    default_auto_field = "django.db.models.BigAutoField"
