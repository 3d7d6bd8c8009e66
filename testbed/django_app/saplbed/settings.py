"""Settings of the test-bed project: SAPL's choices where they affect the proxy.

Everything that differs per run comes from the environment, set by the test fixtures
(tests/conftest.py) or by whoever starts Gunicorn by hand:

  SECRET_KEY            required, as in SAPL
  SAPL_DB_NAME          database loaded with shared/sapl/schema.sql + sample-data.sql
  SAPL_DB_HOST/PORT/USER  default 127.0.0.1 / 5432 / postgres
  SAPL_TESTBED_HITS     file where every request reaching Django is appended (optional)
"""
import os

BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    SECRET_KEY = os.environ["SECRET_KEY"]
except KeyError:
    raise RuntimeError("SECRET_KEY is not set: export SECRET_KEY=... before starting Django")

DEBUG = False
ALLOWED_HOSTS = ["*"]

# SAPL leaves this off: Host is what the proxy passed verbatim, never X-Forwarded-Host.
USE_X_FORWARDED_HOST = False

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]

MIDDLEWARE = [
    # Outermost, so it records requests even when a later layer rejects them.
    "saplbed.hits.HitsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "saplbed.urls"
WSGI_APPLICATION = "saplbed.wsgi.application"

# SAPL's URLs have no trailing slash on many pages (/materia/1, /painel/1/dados);
# redirecting them would change what the client sees.
APPEND_SLASH = False

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("SAPL_DB_NAME", "sapl"),
        "USER": os.environ.get("SAPL_DB_USER", "postgres"),
        "PASSWORD": os.environ.get("SAPL_DB_PASSWORD", ""),
        "HOST": os.environ.get("SAPL_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("SAPL_DB_PORT", "5432"),
    }
}

TEMPLATES = []

LANGUAGE_CODE = "pt-br"
TIME_ZONE = "America/Sao_Paulo"
USE_I18N = False
USE_TZ = True

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

SESSION_ENGINE = "django.contrib.sessions.backends.db"

# Uploads and echoed bodies are read as streams by the views, so Django's in-memory cap on
# form data does not apply to them; SAPL's own 150 MB cap is not what these tests measure.
DATA_UPLOAD_MAX_MEMORY_SIZE = None

STATIC_URL = "/static/"
MEDIA_URL = "/media/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["stderr"], "level": "WARNING"}},
}
