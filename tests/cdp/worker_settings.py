"""Settings for ``persona_deliver`` run as a real subprocess by test_reliability.py (and for
its setup tool). Minimal on purpose: only the apps the outbox needs, so ``migrate`` is quick
and other adapters' test apps do not get in the way.

Environment:

``PERSONA_CDP_DB``            the SQLite file, or the PostgreSQL database name
``PERSONA_TEST_BACKEND``      ``sqlite`` (default) or ``postgres`` (+ Redis for the cache)
``PERSONA_CDP_SEGMENT_URL``   the fake Segment's base URL
``PERSONA_CDP_TIMEOUT``       the sink's HTTP timeout in seconds (default 1.0)
``PERSONA_CDP_CACHE_PREFIX``  Redis key prefix (postgres backend)
"""

import os

import django

SECRET_KEY = "persona-cdp-reliability-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "persona_django",
]
ROOT_URLCONF = "persona_django.urls"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "persona_django.middleware.PersonaMiddleware",
]
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
TEMPLATES: list[dict] = []

BACKEND = os.environ.get("PERSONA_TEST_BACKEND", "sqlite")
DB = os.environ.get("PERSONA_CDP_DB", "")
if BACKEND == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": DB,
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": "127.0.0.1",
            "PORT": "5432",
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/1",
            "KEY_PREFIX": os.environ.get("PERSONA_CDP_CACHE_PREFIX", "persona-cdp-rel"),
        }
    }
else:
    # WAL lets the test read the outbox while the worker writes; synchronous=NORMAL is the
    # usual WAL pairing (a commit is not fsynced one by one; still durable across a killed
    # process, which is what is tested here). Django < 5.1 cannot run an init command.
    options = {"timeout": 30}
    if django.VERSION >= (5, 1):
        options["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DB,
                             "OPTIONS": options}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

SEGMENT_URL = os.environ.get("PERSONA_CDP_SEGMENT_URL", "http://127.0.0.1:9")
PERSONA = {
    "CONSENT_MODE": "opt-in",
    "PLUGINS": {
        "segment": {
            "write_key": "WK",
            "host": SEGMENT_URL,
            "timeout": float(os.environ.get("PERSONA_CDP_TIMEOUT", "1.0")),
            "connect_timeout": 1.0,
            "max_batch": 500,
            "breaker_threshold": 5,
            "breaker_cooldown": 1.0,
            "max_inline_wait": 2.0,
            "public_api_token": "PAT",
            "public_api_host": SEGMENT_URL,
        }
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "persona_django": {"handlers": ["console"], "level": "ERROR"},
        "persona_cdp": {"handlers": ["console"], "level": "ERROR"},
        "persona_sdk": {"handlers": ["console"], "level": "ERROR"},
    },
}
