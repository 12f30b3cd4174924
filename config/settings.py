"""Polyphony settings, read from the environment in one place.

Defaults give the embedded set-up (SQLite, a filesystem Celery broker). Production
(`POLYPHONY_ENV=production`) must name DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY and
ALLOWED_HOSTS; a missing or malformed value stops start-up with a message naming it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_database, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("POLYPHONY_VAR_DIR", str(BASE_DIR / "var")))

PRODUCTION = env_str("POLYPHONY_ENV", "development") == "production"

if PRODUCTION:
    SECRET_KEY = env_str("SECRET_KEY")
    if len(SECRET_KEY) < 50:
        raise ImproperlyConfigured("Environment variable SECRET_KEY must be at least 50 characters in production.")
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("Environment variable ALLOWED_HOSTS is required in production.")
    env_str("DATABASE_URL")  # required: fail loudly rather than fall back to SQLite
    env_str("CELERY_BROKER_URL")
    DEBUG = False
else:
    SECRET_KEY = env_str("SECRET_KEY", "dev-insecure-polyphony-key-change-me-in-production-0123456789")
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
    DEBUG = env_bool("DEBUG", True)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",  # login throttling (see "Access" below)
    "elicitation",
    "annotation",
    "modeling",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",  # Content-Security-Policy header (see "Access" below)
    "config.api_errors.ApiErrorsMiddleware",  # JSON errors under /api/, 413 before an oversized body is read
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into a 429 page
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
            ],
        },
    }
]

DATABASES = {"default": env_database("DATABASE_URL", str(VAR_DIR / "polyphony.sqlite3"))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)  # the embedded default must work on a fresh clone
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "elicitation:study_list"
LOGOUT_REDIRECT_URL = "login"

# Participant state lives in a signed cookie: no session-table write per judgment, and
# nothing a second web worker would not see. It holds ids only, never answers.
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
# No script reads the CSRF cookie: htmx sends the token from the page (hx-headers on <body>).
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = 60 * 60 * 24 * 14
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [f"https://{h}" for h in ALLOWED_HOSTS])

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# WhiteNoise serves app static files straight from their folders in development (no collectstatic).
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = DEBUG
if not PRODUCTION:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PARSER_CLASSES": [
        "config.api_parsers.JSONParser",  # DRF's, with a 400 for a body nested too deeply
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "EXCEPTION_HANDLER": "config.api_errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Polyphony API",
    "DESCRIPTION": "Pluralistic preference elicitation: studies, imports, judgments, exports.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI would otherwise call validator.swagger.io from any non-local host.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "ENUM_NAME_OVERRIDES": {
        "StudyStatusEnum": "elicitation.models.Study.Status",
        "SurveyQuestionKindEnum": "elicitation.models.SurveyQuestion.Kind",
        "JobStatusEnum": "annotation.models.ExportJob.Status",
        "ExportJobFormatEnum": "annotation.models.ExportJob.Format",
        "TrainingRunKindEnum": "modeling.models.TrainingRun.Kind",
    },
}

# Celery: embedded default is kombu's filesystem transport (no server needed).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
elif not CELERY_BROKER_URL.startswith(("redis://", "rediss://", "amqp://", "memory://")):
    raise ImproperlyConfigured(
        f"Environment variable CELERY_BROKER_URL must be a redis://, amqp:// or filesystem:// URL, got {CELERY_BROKER_URL!r}."
    )
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"modeling.tasks.train_reward_model": {"queue": "training"}}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# autodiscover_tasks() finds `<app>.tasks` only; the moral-graph tasks live in their own module.
CELERY_IMPORTS = ["modeling.moral_tasks", "modeling.analytics_tasks"]

# The cache holds rate-limit counters and short-lived markers. LocMemCache is per process: fine for
# the embedded set-up; with several web processes set CACHE_URL (or REDIS_URL) so they share one.
_cache_url = env_str("CACHE_URL", env_str("REDIS_URL", ""))
if _cache_url and not _cache_url.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"Environment variable CACHE_URL must be a redis:// URL, got {_cache_url.split(':')[0]!r}.")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url}
    if _cache_url
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

# Polyphony's own knobs.
POLYPHONY_IMPORT_MAX_BYTES = env_int("POLYPHONY_IMPORT_MAX_BYTES", 50 * 1024 * 1024)
POLYPHONY_EXPORT_SYNC_LIMIT = env_int("POLYPHONY_EXPORT_SYNC_LIMIT", 50_000)
POLYPHONY_PAIRS_PER_PROMPT_CAP = env_int("POLYPHONY_PAIRS_PER_PROMPT_CAP", 45)
POLYPHONY_EMBEDDING_MODEL = env_str("POLYPHONY_EMBEDDING_MODEL", "sentence-transformers/all-MiniLM-L6-v2")
POLYPHONY_JUDGMENT_HOOKS = ["modeling.triggers.retrain_maybe_request"]
POLYPHONY_RETRAIN_EVERY = env_int("POLYPHONY_RETRAIN_EVERY", 200)
POLYPHONY_PSEUDONYM_SALT = env_str("POLYPHONY_PSEUDONYM_SALT", SECRET_KEY)
POLYPHONY_DEDUP_THRESHOLD = env_float("POLYPHONY_DEDUP_THRESHOLD", 0.85)
# Moral graph elicitation. The LLM interviewer talks to any OpenAI-compatible chat endpoint
# (vLLM, Ollama, a hosted API); it is off while POLYPHONY_LLM_BASE_URL is empty, and then every
# participant gets the guided interview.
POLYPHONY_LLM_BASE_URL = env_str("POLYPHONY_LLM_BASE_URL", "")
POLYPHONY_LLM_MODEL = env_str("POLYPHONY_LLM_MODEL", "")
POLYPHONY_LLM_API_KEY = env_str("POLYPHONY_LLM_API_KEY", "")
POLYPHONY_LLM_TIMEOUT = env_float("POLYPHONY_LLM_TIMEOUT", 20.0)
if POLYPHONY_LLM_BASE_URL and not POLYPHONY_LLM_MODEL:
    raise ImproperlyConfigured("Environment variable POLYPHONY_LLM_MODEL is required when POLYPHONY_LLM_BASE_URL is set.")
if POLYPHONY_LLM_TIMEOUT <= 0:
    raise ImproperlyConfigured("Environment variable POLYPHONY_LLM_TIMEOUT must be a positive number of seconds.")
POLYPHONY_MORAL_CONTEXTS_PER_PARTICIPANT = env_int("POLYPHONY_MORAL_CONTEXTS_PER_PARTICIPANT", 1)
POLYPHONY_MORAL_VOTES_PER_PARTICIPANT = env_int("POLYPHONY_MORAL_VOTES_PER_PARTICIPANT", 5)
POLYPHONY_MORAL_VOTES_PER_EDGE = env_int("POLYPHONY_MORAL_VOTES_PER_EDGE", 3)  # serving target per candidate edge
POLYPHONY_MORAL_ALL_PAIRS_MAX_CARDS = env_int("POLYPHONY_MORAL_ALL_PAIRS_MAX_CARDS", 12)
POLYPHONY_MORAL_EDGE_MIN_VOTES = env_int("POLYPHONY_MORAL_EDGE_MIN_VOTES", 2)  # aggregation: keep an edge with
POLYPHONY_MORAL_EDGE_MIN_LIKELIHOOD = env_float("POLYPHONY_MORAL_EDGE_MIN_LIKELIHOOD", 0.1)  # at least this
POLYPHONY_MORAL_EDGE_MAX_ENTROPY = env_float("POLYPHONY_MORAL_EDGE_MAX_ENTROPY", 2.0)  # bits; 2.0 keeps all
POLYPHONY_MORAL_AGGREGATE_EVERY = env_int("POLYPHONY_MORAL_AGGREGATE_EVERY", 10)  # votes; 0: on demand only
# Called after each committed wiser-than vote, and to find near cards (dotted paths, so the
# annotation app does not import modeling).
POLYPHONY_MORAL_VOTE_HOOKS = ["modeling.moral_tasks.moral_graph_aggregate_maybe_request"]
POLYPHONY_MORAL_NEAR_CARDS = "modeling.moral_services.values_card_near_cards"
POLYPHONY_MORAL_STORY_HOOKS = ["modeling.moral_tasks.upgrade_stories_draft_request"]
for _name in ("CONTEXTS_PER_PARTICIPANT", "VOTES_PER_EDGE", "EDGE_MIN_VOTES"):
    if globals()[f"POLYPHONY_MORAL_{_name}"] < 1:
        raise ImproperlyConfigured(f"Environment variable POLYPHONY_MORAL_{_name} must be at least 1.")
DATA_UPLOAD_MAX_MEMORY_SIZE = POLYPHONY_IMPORT_MAX_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Access: login throttling, API rate limits, Content-Security-Policy -------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses a locked-out username + IP before checking a password
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env_bool("POLYPHONY_LOGIN_THROTTLE", True)
AXES_FAILURE_LIMIT = env_int("POLYPHONY_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("POLYPHONY_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]  # one attacker cannot lock a researcher out everywhere
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False  # no start-up banner on every manage.py command; lock-outs are still logged
if PRODUCTION:
    AXES_IPWARE_PROXY_COUNT = env_int("POLYPHONY_PROXY_COUNT", 1)  # behind one TLS proxy (X-Forwarded-For)
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]


def _rate(name: str, default: str) -> str | None:
    """A DRF throttle rate such as "120/min"; "off" turns that limit off."""
    raw = env_str(name, default).strip().lower()
    if raw == "off":
        return None
    number, _, period = raw.partition("/")
    if not number.isdigit() or int(number) < 1 or period not in {"s", "sec", "m", "min", "h", "hour", "d", "day"}:
        raise ImproperlyConfigured(f"Environment variable {name} must look like 120/min (or off), got {raw!r}.")
    return raw


# Per participant token (the participant API) and per client address (unauthenticated API calls).
# An honest annotator makes about two requests per judgment, a few judgments a minute.
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {
    "participant": _rate("POLYPHONY_PARTICIPANT_RATE", "120/min"),
    "participant_page": _rate("POLYPHONY_PARTICIPANT_PAGE_RATE", "120/min"),
}

# Scripts and styles come from our own static files only; nothing inline, no eval. The API docs
# pages relax it for themselves (config.urls).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
