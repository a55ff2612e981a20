from django.apps import AppConfig


class BenchPagesConfig(AppConfig):
    name = "django_bench_project.benchpages"
    label = "benchpages"
    default_auto_field = "django.db.models.BigAutoField"
