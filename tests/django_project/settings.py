"""Settings for the Django adapter's tests.

SQLite + locmem by default (the README test command). ``PERSONA_TEST_BACKEND=postgres``
switches to PostgreSQL (127.0.0.1:5432, database ``postgres``; pytest-django creates
``test_postgres``) and Redis (127.0.0.1:6379) through Django's own ``RedisCache``.
"""

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "persona-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.django_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.admin",
    "persona_django",
    "tests.django_project",
]

# Each adapter's test settings live in their own file (owned with that adapter).
from .settings_cdp import *  # noqa: E402, F403
from .settings_email import *  # noqa: E402, F403
from .settings_wagtail import *  # noqa: E402, F403

INSTALLED_APPS += EXTRA_APPS_CDP + EXTRA_APPS_EMAIL + EXTRA_APPS_WAGTAIL  # noqa: F405

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
            ]
        },
    }
]

STATIC_URL = "/static/"
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

BACKEND = os.environ.get("PERSONA_TEST_BACKEND", "sqlite")
if BACKEND == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "postgres",
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": "127.0.0.1",
            "PORT": "5432",
            # one test database per run, so concurrent runs never drop each other's
            "TEST": {"NAME": f"test_persona_{os.getpid()}"},
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/1",
            "KEY_PREFIX": f"persona-test-{os.getpid()}",
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": BASE_DIR / "test.sqlite3",
            # a file (threaded tests need real locking), one per run, so concurrent runs
            # never share it
            "TEST": {"NAME": str(Path(tempfile.gettempdir()) / f"persona-test-{os.getpid()}.sqlite3")},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

PERSONA = {
    "CONSENT_MODE": "opt-in",
    "DEFINITIONS": str(BASE_DIR / "definitions.json"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"persona_django": {"handlers": ["console"], "level": "WARNING"}},
}
