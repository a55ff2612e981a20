"""Settings for the Django benchmark (``bench/bench_django.py`` sets the environment first).

``PERSONA_BENCH_BACKEND``
    ``sqlite`` (default): an SQLite file (``PERSONA_BENCH_DB``) and the in-process locmem
    cache. ``postgres``: PostgreSQL on 127.0.0.1:5432 (user ``postgres``, database
    ``PERSONA_BENCH_DB``, created and dropped by the script) and Redis on 127.0.0.1:6379
    through Django's own ``RedisCache`` (keys under ``PERSONA_BENCH_CACHE_PREFIX``).
``PERSONA_BENCH_WAGTAIL``
    ``1``: also install Wagtail, wagtail-personalisation and the ``benchpages`` app (the
    comparison pages). The script sets it when both are importable.
``PERSONA_BENCH_RECORD_PAGE_VIEWS``
    ``PERSONA["RECORD_PAGE_VIEWS"]`` at start-up (the script switches it with
    ``override_settings`` between phases).

The session engine is ``signed_cookies`` so that a session costs no SQL (a database session
backend would add queries that are neither persona's nor wagtail-personalisation's).
"""

import os
from pathlib import Path

from .definitions import DEFINITIONS

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "persona-bench-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en"
ROOT_URLCONF = "django_bench_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
WAGTAIL = os.environ.get("PERSONA_BENCH_WAGTAIL") == "1"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "persona_django",
]
if WAGTAIL:
    INSTALLED_APPS += [
        "wagtail.sites",
        "wagtail.users",
        "wagtail.images",
        "wagtail.documents",
        "wagtail.snippets",
        "wagtail.admin",
        "wagtail",
        "modelcluster",
        "taggit",
        "wagtail_modeladmin",
        "wagtailfontawesomesvg",
        "wagtail_personalisation",
        "django_bench_project.benchpages",
    ]
    WAGTAIL_SITE_NAME = "persona bench"
    WAGTAILADMIN_BASE_URL = "http://testserver"

# The usual stack; PersonaMiddleware after AuthenticationMiddleware. Wagtail needs no
# middleware of its own, and wagtail-personalisation works through Wagtail's
# before_serve_page hooks (it only needs SessionMiddleware), so both sides of the
# comparison run through exactly this stack.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "persona_django.middleware.PersonaMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django_bench_project.context_processors.catalogue",
            ],
            # (with DEBUG = False Django uses the cached template loader: templates are
            # parsed once, not per request)
        },
    }
]

STATIC_URL = "/static/"
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

BACKEND = os.environ.get("PERSONA_BENCH_BACKEND", "sqlite")
DB_NAME = os.environ.get("PERSONA_BENCH_DB", str(BASE_DIR / "bench.sqlite3"))
CACHE_PREFIX = os.environ.get("PERSONA_BENCH_CACHE_PREFIX", "persona-bench")
if BACKEND == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": DB_NAME,
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": "127.0.0.1",
            "PORT": "5432",
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/0",
            "KEY_PREFIX": CACHE_PREFIX,
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DB_NAME}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


class _NoMigrations(dict):
    """Every app's tables are created straight from its models (``migrate --run-syncdb``),
    as pytest-django's ``--nomigrations`` does: Wagtail's ~200 migrations would otherwise
    take most of a quick run. The benchmark creates what Wagtail's data migrations would
    (the root page, a locale, the default site) itself."""

    def __contains__(self, item: object) -> bool:
        return True

    def __getitem__(self, item: str) -> None:
        return None


MIGRATION_MODULES = _NoMigrations()

PERSONA = {
    "CONSENT_MODE": "opt-in",
    "DEFINITIONS": DEFINITIONS,
    "RECORD_PAGE_VIEWS": os.environ.get("PERSONA_BENCH_RECORD_PAGE_VIEWS", "0") == "1",
    "DEBUG_EXPLAIN": False,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"persona_django": {"handlers": ["console"], "level": "WARNING"}},
}
