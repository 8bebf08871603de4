"""Django settings, read from the environment (see README, "Configuration")."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from corsheaders.defaults import default_headers as cors_default_headers
from django.core.exceptions import ImproperlyConfigured

from orchestrator_site.database_url import running_embedded_url, without_password
from orchestrator_site.env import env_bool, env_int, env_list
from orchestrator_site.paths import BASE_DIR, VAR_DIR

# --- Profile -------------------------------------------------------------------------------------
# DJANGO_ENV=production switches on every hardening setting that `check --deploy` asks for and makes
# DEBUG default to off; development (the default) is the embedded quick start.
DJANGO_ENV = os.environ.get("DJANGO_ENV", "development").strip().lower()
if DJANGO_ENV not in {"development", "production"}:
    raise ImproperlyConfigured(f"DJANGO_ENV={DJANGO_ENV!r} is not one of: development, production")
PRODUCTION = DJANGO_ENV == "production"

DEBUG = env_bool("DEBUG", default=not PRODUCTION)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. It is required when DEBUG is off (and always in production): "
            "set SECRET_KEY to a long random string, for example from "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`."
        )
    # Development only: a fixed key is harmless when DEBUG is on and the server listens on localhost.
    SECRET_KEY = "django-insecure-development-only-key-never-used-when-debug-is-off"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is not set: production needs the host names it serves")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# --- Applications --------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Trigram indexes (pg_trgm) for subscription search; harmless on SQLite, where they are not created.
    "django.contrib.postgres",
    "rest_framework",
    # API tokens stored as hashes, each with an expiry (README, "The REST API"; subscriptions.api_tokens).
    "knox",
    # Admin login lock-out after repeated failures (the AXES_* settings below).
    "axes",
    "corsheaders",
    "django_filters",
    "drf_spectacular",
    # Swagger UI's scripts and styles as our own static files: /api/docs/ works with no outside network.
    "drf_spectacular_sidecar",
    "subscriptions",
    "workflows",
    "processes",
]

MIDDLEWARE = [
    # First: every response, even a redirect or a refusal by the middleware below, carries X-Request-ID, and
    # every line logged while handling the request carries its id.
    "orchestrator_site.request_id.RequestIdMiddleware",
    # Before anything that may answer by itself (a redirect, a 413, a 503), so that those answers carry the
    # CORS headers too and a browser shows the client the real status, not a CORS error. Only under /api/.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (STATIC_ROOT, and the apps' own in development) answered here, before sessions or the
    # database: right after SecurityMiddleware, so the HTTPS redirect and HSTS still apply to them.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "orchestrator_site.middleware.BodySizeLimitMiddleware",
    # SQLite only: a request waits briefly for the one write lock, then answers 503 (orchestrator_site.dbbusy).
    "orchestrator_site.middleware.SQLiteBusyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a refused admin login (locked out) into the lock-out page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "orchestrator_site.urls"
WSGI_APPLICATION = "orchestrator_site.wsgi.application"
ASGI_APPLICATION = "orchestrator_site.asgi.application"

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
    },
]

# --- Database ------------------------------------------------------------------------------------
# DATABASE_URL picks the database (postgres://user@host:5432/name in production and CI). `make run` and
# `make test` set it to their embedded PostgreSQL (orchestrator_site/embedded_db.py) when it is unset; a
# bare manage.py without it falls back to an SQLite file under var/ (one writer at a time: README,
# "Configuration").
DEFAULT_SQLITE_URL = f"sqlite:///{VAR_DIR / 'orchestrator.sqlite3'}"
# Not a setting (lower case): Django's debug pages list the settings, and this may hold a password.
# Without DATABASE_URL, a command joins the embedded PostgreSQL while it runs (started by `make run`), so that
# `manage.py createsuperuser` beside it reaches the same data; else SQLite.
_database_url = (os.environ.get("DATABASE_URL") or running_embedded_url(VAR_DIR / "postgres", "orchestrator")
                 or DEFAULT_SQLITE_URL)
# A thread serving requests keeps its database connection this many seconds, checked (CONN_HEALTH_CHECKS)
# when a request first uses it, instead of opening one per request: a new PostgreSQL connection costs more
# than the queries of most API requests. 0 closes it after every request. Threads that run processes
# (the thread pool, Celery workers) manage theirs themselves (processes.dberrors.keep_healthy_connection).
try:
    _conn_max_age = int(os.environ.get("CONN_MAX_AGE", "60").strip() or "60")
    if _conn_max_age < 0:
        raise ValueError("negative")
except ValueError as exc:
    raise ImproperlyConfigured(
        f"CONN_MAX_AGE={os.environ.get('CONN_MAX_AGE')!r} is not a whole number of seconds (0 or more)"
    ) from exc
try:
    _default_db = dj_database_url.parse(_database_url, conn_max_age=_conn_max_age, conn_health_checks=True)
except ValueError as exc:  # an unknown scheme or a malformed URL: say which setting is at fault
    # Shown in logs and on terminals: the URL without its password, the rest as given so the fault shows.
    # `from None`: the parser's own error may quote a part of the URL (a password taken for a port).
    reason = str(exc) or "it is not a valid URL (scheme://user:password@host:port/name)"
    raise ImproperlyConfigured(f"DATABASE_URL={without_password(_database_url)!r} cannot be used: {reason}") from None

if _default_db["ENGINE"] == "django.db.backends.sqlite3":
    if _default_db["NAME"] and _default_db["NAME"] != ":memory:":
        Path(_default_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Threads writing to one SQLite file need WAL and immediate transactions, or writers see
    # "database is locked" instead of waiting their turn. A transaction takes the file's only write
    # lock when it begins, so a step holds it for as long as it runs: other writers wait up to `timeout`
    # seconds, then fail. The engine's threads wait this long (a step failing over a lock is worse than
    # a slow one); a web request waits less and answers 503 (orchestrator_site.middleware).
    _default_db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "timeout": 20,
    }
else:
    if _default_db["ENGINE"] == "django.db.backends.postgresql":
        # A Unix socket given libpq's way, postgres://user@/name?host=/socket/dir (how `make run` reaches
        # its embedded server), is the connection's HOST: code that reads HOST sees the socket.
        _options = _default_db.setdefault("OPTIONS", {})
        if not _default_db["HOST"] and "host" in _options:
            _default_db["HOST"] = str(_options.pop("host"))
            if not _default_db["PORT"] and "port" in _options:
                _default_db["PORT"] = str(_options.pop("port"))
        # Server-side binding lets PostgreSQL prepare the statements every step repeats (the engine's
        # lock and log), which the engine benchmark shows is a large part of its per-step cost. Behind
        # PgBouncer in transaction mode, use PgBouncer >= 1.21 with max_prepared_statements, or turn it
        # off with ?server_side_binding=false in DATABASE_URL.
        _options.setdefault("server_side_binding", True)
        _options.setdefault("prepare_threshold", 5)
DATABASES = {"default": _default_db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth, i18n, static --------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# django-axes first: it refuses a login that is locked out before a password is checked, and counts the
# failures (AXES_* below). Its subclass lets through a login made without a request (the test client's
# login(), the shell), which axes would refuse outright: those are not logins over the web.
AUTHENTICATION_BACKENDS = [
    "orchestrator_site.lockout.WebLoginLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# --- Admin login lock-out (django-axes) -------------------------------------------------------------
# After AXES_FAILURE_LIMIT failed logins for one username from one client address, that pair is locked
# out for AXES_COOLOFF_MINUTES: the login page answers 429 with the moment to try again, and even the right
# password is refused until then. The pair, not the address alone: one office behind one address is not
# locked out by one person's typos, nor is an admin locked out of the account by someone guessing from
# elsewhere. Unlock early with `manage.py axes_reset_username USERNAME` (or axes_reset for everyone).
AXES_ENABLED = env_bool("AXES_ENABLED", True)
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# The client address as the API's bad-token throttle sees it: X-Forwarded-For only when
# ORCHESTRATOR["TRUSTED_PROXY_COUNT"] says how many proxies in front of the app set it.
AXES_CLIENT_IP_CALLABLE = "orchestrator_site.client_address.client_address"
AXES_LOCKOUT_CALLABLE = "orchestrator_site.lockout.lockout_response"
# A login tried while locked out does not push the end of the lock-out further: the page's "try again at"
# holds. A successful login forgets the earlier failures of that username and address.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
# axes would also add a row per successful login to a table that nothing empties; the failures it counts, and
# the lock-outs, are kept all the same (admin: "Access attempts").
AXES_DISABLE_ACCESS_LOG = True
# No "AXES: BEGIN version ..." line at the start of every command and server; lock-outs are logged all the same.
AXES_VERBOSE = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
# One format for dates and moments wherever Django renders them: "2026-11-30 06:18:30 UTC" (humanize.py).
FORMAT_MODULE_PATH = ["orchestrator_site.formats"]

STATIC_URL = "static/"
# `manage.py collectstatic` gathers every app's static files here; WhiteNoise serves them from the web
# process (orchestrator_site/gunicorn_conf.py), so no other server is needed for them.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
if PRODUCTION:
    # Compressed (gzip, and brotli when installed) copies and content-hashed names that browsers may cache for
    # ever. It needs collectstatic's manifest: a page whose static file was not collected is an error, not a
    # silent 404 (`make serve` collects before it starts).
    _staticfiles_backend = "whitenoise.storage.CompressedManifestStaticFilesStorage"
else:
    # Development and the test suite need no collectstatic: plain names, and WhiteNoise looks each file up in
    # its app (USE_FINDERS) when it is asked for (AUTOREFRESH), so an edited file is served as it is now and
    # starting the middleware scans nothing (the test client starts it again for every test).
    _staticfiles_backend = "django.contrib.staticfiles.storage.StaticFilesStorage"
    WHITENOISE_USE_FINDERS = True
    WHITENOISE_AUTOREFRESH = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": _staticfiles_backend},
}

# --- Security (production profile) ---------------------------------------------------------------
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", str(60 * 60 * 24 * 365)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    X_FRAME_OPTIONS = "DENY"
    # Behind a TLS-terminating proxy, tell Django which header says the request was HTTPS (README, "Deploy").
    if env_bool("SECURE_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # A load balancer's or container platform's health probe calls the web process directly over plain HTTP,
    # and treats a redirect as down. The health answer holds nothing secret. Prometheus, inside the network,
    # scrapes each web process directly too; /metrics keeps its own guard (METRICS_ALLOWED_IPS, METRICS_TOKEN).
    SECURE_REDIRECT_EXEMPT = [r"^api/health/$", r"^metrics$"]

# --- Logging -------------------------------------------------------------------------------------
# One handler, on stderr, that every logger's lines reach: ours, Django's and third parties' (through the
# root logger). LOG_FORMAT=json writes one JSON object per line; plain (the default) is for people. The
# context filter adds the request id, and the process, workflow and step being run (orchestrator_site.logcontext).
LOG_LEVEL = os.environ.get("LOG_LEVEL", "").strip().upper() or "INFO"
LOG_LEVEL = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(LOG_LEVEL, LOG_LEVEL)  # the standard library's aliases
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL={os.environ['LOG_LEVEL']!r} is not one of: DEBUG, INFO, WARNING, ERROR, "
                               f"CRITICAL")
LOG_FORMAT = os.environ.get("LOG_FORMAT", "").strip().lower() or "plain"
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT={os.environ['LOG_FORMAT']!r} is not one of: plain, json")
_django_log_level = "INFO" if LOG_LEVEL == "DEBUG" else LOG_LEVEL
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "orchestrator_site.logcontext.ContextFilter"},
        # Callback tokens (the credential in a callback URL's path) never reach a log line.
        "redact": {"()": "orchestrator_site.logredact.RedactFilter"},
    },
    "formatters": {
        "plain": {"()": "orchestrator_site.logformat.PlainFormatter"},
        "json": {"()": "orchestrator_site.logformat.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["redact", "context"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # Django applies its DEFAULT_LOGGING before this: the "django" logger gets a console handler of its own
    # (when DEBUG is on) and still propagates to the root, which printed each of its lines twice; and
    # "django.server" writes through a handler and format of its own. Both lose their handlers here and
    # reach ours through the root (so the request lines of `runserver` are JSON too, with their request id).
    # Their level is LOG_LEVEL but never below INFO: Django's DEBUG lines are every SQL query (with DEBUG on).
    # Django's mail_admins handler goes too: ADMINS is not set; failures are notified by the orchestrator.
    "loggers": {
        "django": {"handlers": [], "level": _django_log_level, "propagate": True},
        "django.server": {"handlers": [], "level": _django_log_level, "propagate": True},
    },
}

# --- Email (the notifications of failures: ORCHESTRATOR["NOTIFY_EMAILS"]) --------------------------
# Django's default mailer: SMTP to EMAIL_HOST:EMAIL_PORT (localhost:25), logging in with EMAIL_HOST_USER and
# EMAIL_HOST_PASSWORD when set, over STARTTLS (EMAIL_USE_TLS) or TLS (EMAIL_USE_SSL); EMAIL_BACKEND names
# another backend (e.g. django.core.mail.backends.console.EmailBackend prints them). From DEFAULT_FROM_EMAIL.
_email_backend = os.environ.get("EMAIL_BACKEND", "").strip() or "django.core.mail.backends.smtp.EmailBackend"
_email_options: dict[str, object] = {}
if _email_backend == "django.core.mail.backends.smtp.EmailBackend":
    try:
        _email_port = int(os.environ.get("EMAIL_PORT", "25"))
    except ValueError:
        raise ImproperlyConfigured(f"EMAIL_PORT={os.environ['EMAIL_PORT']!r} is not a port number") from None
    _email_options = {
        "host": os.environ.get("EMAIL_HOST", "localhost"), "port": _email_port,
        "username": os.environ.get("EMAIL_HOST_USER", ""), "password": os.environ.get("EMAIL_HOST_PASSWORD", ""),
        "use_tls": env_bool("EMAIL_USE_TLS", False), "use_ssl": env_bool("EMAIL_USE_SSL", False),
    }
MAILERS = {"default": {"BACKEND": _email_backend, "OPTIONS": _email_options}}
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "").strip() or "orchestrator@localhost"

# --- The REST API --------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: an anonymous request then gets 401 with `WWW-Authenticate: Token`, not a bare 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # knox's hashed tokens, `Authorization: Token <key>` (REST_KNOX below), refusing an address that sent
        # too many bad ones (ORCHESTRATOR["API_BAD_TOKEN_LIMIT"]) with 429.
        "subscriptions.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "orchestrator_site.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "orchestrator_site.api.exception_handler",
    # JSON only, for every view: a body nested too deeply is a 400 here, not a RecursionError (500) later.
    "DEFAULT_PARSER_CLASSES": ["orchestrator_site.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
# Tokens are issued by `manage.py create_api_token` (subscriptions.api_tokens), which gives each its expiry
# (ORCHESTRATOR["API_TOKEN_EXPIRY_DAYS"]); TOKEN_TTL is only knox's own default, for tokens made in the admin.
# The header stays the one clients have always sent: `Authorization: Token <key>`.
REST_KNOX = {
    "AUTH_HEADER_PREFIX": "Token",
    "TOKEN_TTL": timedelta(days=90),
    "AUTO_REFRESH": False,
}

# --- CORS (django-cors-headers) ------------------------------------------------------------------
# Off unless CORS_ALLOWED_ORIGINS lists origins (comma-separated, e.g. https://dash.example.org): then
# browser pages from those origins may call the API (/api/ only, never the admin). Without credentials:
# the API authenticates with the Authorization header, which a page sends itself; cookies (the admin's
# session) are never accepted from another origin.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", [])
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_HEADERS = (*cors_default_headers, "idempotency-key", "if-none-match", "x-request-id")
# What a page's script may read from an answer besides the simple headers.
CORS_EXPOSE_HEADERS = ["etag", "retry-after", "x-request-id"]

SPECTACULAR_SETTINGS = {
    "TITLE": "Subscription orchestrator API",
    "DESCRIPTION": "Products, subscriptions, workflows and processes: start, watch, resume, retry and abort.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # /api/docs/ loads Swagger UI from our static files (drf_spectacular_sidecar), never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a `status` with its own choices: name each set, or the schema gets hashed names.
    "ENUM_NAME_OVERRIDES": {
        "ProcessStatusEnum": "processes.models.ProcessStatus",
        "StepStatusEnum": "processes.models.StepStatus",
        "SubscriptionLifecycleEnum": "subscriptions.lifecycle.SubscriptionLifecycle",
        "ProductLifecycleEnum": "subscriptions.models.ProductLifecycle",
    },
}

# --- The orchestrator ----------------------------------------------------------------------------
# Every orchestrator setting lives in this one namespace; the defaults and what each key means are in
# orchestrator_site/conf.py (DEFAULTS), read through orchestrator_site.conf.orchestrator_setting().
ORCHESTRATOR: dict[str, object] = {}
# Each key can be set from the environment too (ORCHESTRATOR_EXECUTOR=celery, ORCHESTRATOR_LEASE_SECONDS=60),
# so every machine of a multi-machine setup (web servers and workers) can share one settings file.
from orchestrator_site.conf import from_environment  # noqa: E402 - needs only the standard library

ORCHESTRATOR.update(from_environment(os.environ))

# --- Celery (ORCHESTRATOR["EXECUTOR"] = "celery") ------------------------------------------------
# Read by orchestrator_site/celery.py (namespace CELERY). Messages carry only a process id.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_TASK_IGNORE_RESULT = True  # the database is the result; no result backend is needed
# Celery's Django fixup closes the worker's database connection around every task unless told to reuse
# it; opening one costs more than a short process's steps. Reused for this many tasks, then renewed (and
# checked before every task: processes.tasks).
CELERY_DB_REUSE_MAX = int(os.environ.get("CELERY_DB_REUSE_MAX", "1000"))
# A web request that starts a process must not hang on a broker that is down: connect within a few
# seconds, do not retry publishing, and answer 503 instead (processes.executors.celery).
CELERY_BROKER_CONNECTION_TIMEOUT = float(os.environ.get("CELERY_BROKER_CONNECTION_TIMEOUT", "3"))
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
    "socket_connect_timeout": CELERY_BROKER_CONNECTION_TIMEOUT,
    "socket_timeout": 10,
    # Redis: a message not acknowledged within this time is delivered again. Longer than any process
    # run (acks_late: acknowledged when the run returns); a second delivery is harmless anyway.
    "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", str(6 * 60 * 60))),
}
CELERY_TASK_PUBLISH_RETRY = False
# Workers keep retrying the broker at start-up and after a lost connection (they are long-lived).
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# One message at a time per worker process: a process run can be long, and a prefetched message
# would wait behind it while another worker sits idle.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
