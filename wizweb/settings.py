"""Django settings: one module, every value read from the environment through typed parsers.

A bad value stops start-up with one line that names the variable (see `EnvError` and
`manage.py`), never with a traceback.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import environ
import psutil
from django.core.exceptions import ImproperlyConfigured

from wizweb.private_files import private_modes_tighten, private_umask_set

BASE_DIR = Path(__file__).resolve().parent.parent

# Before anything is written: sessions, conversations, the key and the logs are this user's only.
private_umask_set()

env = environ.Env()


def _env_value(name: str, parse: Any, default: Any) -> Any:
    """Read one variable with django-environ, turning its errors into one line naming it."""
    try:
        return parse(name, default=default)
    except (ValueError, KeyError, ImproperlyConfigured) as exc:
        raise ImproperlyConfigured(f"{name} is not valid: {exc}") from None


def _strict_bool(name: str, default: bool) -> bool:
    # django-environ reads any unknown word as False; a typo must not silently turn a flag off.
    raw = env.str(name, default="").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} is not valid: {raw!r} is not one of true/false/1/0.")


def _directory(name: str, default: Path) -> Path:
    raw = _env_value(name, env.str, str(default))
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = (BASE_DIR / path).resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImproperlyConfigured(
            f"{name}={raw} cannot be used as a directory: {exc.strerror}."
        ) from None
    return path


def _secret_key(data_dir: Path) -> str:
    """The secret key: DJANGO_SECRET_KEY, or one generated once into the data dir."""
    given = _env_value("DJANGO_SECRET_KEY", env.str, "")
    if given:
        return str(given)
    key_file = data_dir / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


DATA_DIR = _directory("WIZ_DATA_DIR", BASE_DIR / "var")
MODELS_DIR = _directory("WIZ_MODELS_DIR", DATA_DIR / "models")
RUN_DIR = DATA_DIR / "run"
RUN_DIR.mkdir(exist_ok=True)
private_modes_tighten(DATA_DIR, RUN_DIR)  # an install made before may have left them readable

SECRET_KEY = _secret_key(DATA_DIR)

# Prometheus (GET /metrics): every process of this box (daphne, the workers) writes its counters
# and histograms to files in this dir (prometheus_client's multiprocess mode), and /metrics adds
# them up. prometheus_client reads the variable when it is first imported: here, before any app.
# `serve` empties the dir at start. Always this data dir's: a value inherited from another
# Wiz Web (a parent process with another data dir) must not mix their counters.
METRICS_DIR = RUN_DIR / "metrics"
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)
METRICS_DIR.mkdir(parents=True, exist_ok=True)
# Who may read /metrics besides this machine and staff API keys: `Authorization: Bearer TOKEN`.
WIZ_METRICS_TOKEN: str = _env_value("WIZ_METRICS_TOKEN", env.str, "")
DEBUG = _strict_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS: list[str] = _env_value("DJANGO_ALLOWED_HOSTS", env.list, ["*"])

# Redis: REDIS_URL, or the private redis-server that `serve` (and the tests) start on a unix
# socket under the data dir, so nothing listens on the LAN and no port can clash.
PRIVATE_REDIS_SOCKET = RUN_DIR / "redis.sock"
REDIS_URL: str = _env_value("REDIS_URL", env.str, "")
USE_PRIVATE_REDIS = not REDIS_URL
if USE_PRIVATE_REDIS:
    REDIS_URL = f"unix://{PRIVATE_REDIS_SOCKET}"
elif not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(
        f"REDIS_URL is not valid: {REDIS_URL!r} must start with redis://, rediss:// or unix://."
    )

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_rq",
    "axes",
    "wizweb",
    "chat",
    "models_admin",
    "usage",
    "documents",
]

MIDDLEWARE = [
    "wizweb.request_log.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "wizweb.static_files.StaticFilesMiddleware",
    "wizweb.login_slowdown.LoginSlowdownMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    # Last, as django-axes asks: it turns a lockout met anywhere above into the login page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "wizweb.urls"
ASGI_APPLICATION = "wizweb.asgi.application"

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
                "wizweb.preferences.theme",
            ],
        },
    },
]

# SQLite in WAL mode with a busy timeout by default (workers and the web process write at the
# same time); PostgreSQL, or anything Django speaks, through DATABASE_URL.
_default_db = f"sqlite:///{DATA_DIR / 'db.sqlite3'}"
DATABASES = {"default": _env_value("DATABASE_URL", env.db_url, _default_db)}
if DATABASES["default"]["ENGINE"] not in (
    "django.db.backends.sqlite3",
    "django.db.backends.postgresql",
):
    raise ImproperlyConfigured(
        "DATABASE_URL is not valid: use postgres://user@host:port/name or sqlite:////path/db."
    )
# How long a SQLite writer waits for another to finish before it gives up (seconds).
WIZ_SQLITE_TIMEOUT: float = _env_value("WIZ_SQLITE_TIMEOUT", env.float, 20.0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": WIZ_SQLITE_TIMEOUT,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Tests share their database with worker and server subprocesses, so it must be a file.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# django-axes' backend first: it refuses a locked-out address or account before any password
# is checked, and logs nobody in (ModelBackend does, and sessions name it as before).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# Serve straight from the app and static/ folders: no collectstatic step before `serve`.
WHITENOISE_USE_FINDERS = True

CHANNEL_LAYERS = {
    "default": {
        # Redis pub/sub: a frame is one PUBLISH, and each process reads its subscriptions on
        # one connection. The core layer's per-channel sorted sets, Lua scripts and blocking
        # pops cost about 0.9 ms of CPU per frame against 0.1 ms here (measured on a 2-core
        # box), CPU that llama.cpp wants. Nothing is kept for a reader that is not listening,
        # which the chunk log covers (see chat.streams); a Redis restart keeps subscriptions
        # (the client subscribes again when it reconnects).
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL]},
    }
}

# The generation queues, in the order a worker serves them: strict priority.
GENERATION_QUEUES = ["generate-high", "generate", "generate-low"]
# After them all: work for nobody waiting (the titles the model writes), taken only while no
# answer waits, and paused by the scheduler for any answer that finds the slots full.
BACKGROUND_QUEUE = "generate-background"
DOWNLOAD_QUEUE = "downloads"
# Extracting and indexing uploaded documents: a worker of its own (`documents` in serve), never
# the inference workers' slots nor the web process.
DOCUMENT_QUEUE = "documents"
RQ_QUEUES = {
    name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600}
    for name in [*GENERATION_QUEUES, BACKGROUND_QUEUE, DOWNLOAD_QUEUE, DOCUMENT_QUEUE]
}
# After a conversation's first answer, the model writes it a short title (chat.titles).
WIZ_MODEL_TITLES = _strict_bool("WIZ_MODEL_TITLES", True)

# How long a search or a repo's listing on the Hub may take before the models page says the box
# seems offline (models_admin/hub.py). Not an operator's knob; the tests shorten it.
WIZ_HUB_DEADLINE_S = 6.0

# Documents (docs/documents.md): the largest file one may upload, what one person's files may
# add up to, and the longest one file's extraction and indexing may run on the worker.
WIZ_DOCUMENT_MAX_BYTES: int = _env_value("WIZ_DOCUMENT_MAX_BYTES", env.int, 50 * 1024 * 1024)
WIZ_DOCUMENTS_MAX_BYTES_PER_USER: int = _env_value(
    "WIZ_DOCUMENTS_MAX_BYTES_PER_USER", env.int, 500 * 1024 * 1024
)
WIZ_DOCUMENT_INDEX_TIMEOUT: int = _env_value("WIZ_DOCUMENT_INDEX_TIMEOUT", env.int, 600)
# The local model (its name on the models page) whose vectors are combined with the full-text
# rank in retrieval; empty: full text only. Computed on the inference workers as background work
# (docs/documents.md, "Embeddings").
WIZ_EMBEDDING_MODEL: str = _env_value("WIZ_EMBEDDING_MODEL", env.str, "").strip()
for _name, _value in (
    ("WIZ_DOCUMENT_MAX_BYTES", WIZ_DOCUMENT_MAX_BYTES),
    ("WIZ_DOCUMENTS_MAX_BYTES_PER_USER", WIZ_DOCUMENTS_MAX_BYTES_PER_USER),
    ("WIZ_DOCUMENT_INDEX_TIMEOUT", WIZ_DOCUMENT_INDEX_TIMEOUT),
):
    if _value < 1:
        raise ImproperlyConfigured(f"{_name} must be 1 or more, not {_value}.")

# Whether people may create their own accounts at /accounts/signup/ (an admin's choice).
WIZ_ALLOW_SIGNUP = _strict_bool("WIZ_ALLOW_SIGNUP", False)

# Login throttling (django-axes): this many failed logins from one address, or for one account,
# lock that address or account out for WIZ_LOGIN_LOCKOUT_MINUTES; 0 failures turns it off.
# Attempts live in the database, so the web process and `manage.py` see the same locks, and
# staff see and clear them in the admin ("Access attempts"), or with `manage.py axes_reset`.
WIZ_LOGIN_FAILURE_LIMIT: int = _env_value("WIZ_LOGIN_FAILURE_LIMIT", env.int, 5)
WIZ_LOGIN_LOCKOUT_MINUTES: int = _env_value("WIZ_LOGIN_LOCKOUT_MINUTES", env.int, 15)
for _name, _value, _low in (
    ("WIZ_LOGIN_FAILURE_LIMIT", WIZ_LOGIN_FAILURE_LIMIT, 0),
    ("WIZ_LOGIN_LOCKOUT_MINUTES", WIZ_LOGIN_LOCKOUT_MINUTES, 1),
):
    if _value < _low:
        raise ImproperlyConfigured(f"{_name} must be {_low} or more, not {_value}.")
AXES_ENABLED = WIZ_LOGIN_FAILURE_LIMIT > 0
AXES_FAILURE_LIMIT = WIZ_LOGIN_FAILURE_LIMIT
# Each on its own: a guesser who tries many accounts from one address is stopped, and so is
# one who tries one account from many addresses.
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_COOLOFF_TIME = timedelta(minutes=WIZ_LOGIN_LOCKOUT_MINUTES)
# A typo followed by the right password leaves no strikes behind.
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "wizweb.views.login_locked"
# Before the lock, failed logins slow the next try down: from the third on, this many seconds,
# doubled at each failure up to eight times as long (wizweb/login_slowdown.py). Not an
# operator's knob (the README does not list it): read from the environment only so that the
# test suite's daphne can shorten it, as its own process's tests do with override_settings.
WIZ_LOGIN_SLOWDOWN_FIRST_S: float = _env_value("WIZ_LOGIN_SLOWDOWN_FIRST_S", env.float, 0.5)

# Generation limits.
WIZ_MAX_PENDING_PER_USER: int = _env_value("WIZ_MAX_PENDING_PER_USER", env.int, 4)
# Site-wide quotas, for users whose own and groups' quotas (usage.Quota, in the admin) leave a
# field empty; 0: no limit.
WIZ_TOKENS_PER_DAY: int = _env_value("WIZ_TOKENS_PER_DAY", env.int, 0)
WIZ_REQUESTS_PER_MINUTE: int = _env_value("WIZ_REQUESTS_PER_MINUTE", env.int, 0)
for _name, _value in (
    ("WIZ_TOKENS_PER_DAY", WIZ_TOKENS_PER_DAY),
    ("WIZ_REQUESTS_PER_MINUTE", WIZ_REQUESTS_PER_MINUTE),
):
    if _value < 0:
        raise ImproperlyConfigured(f"{_name} must be 0 (no limit) or more, not {_value}.")
# What one inference worker may hold in loaded models (weights and KV cache), in MiB;
# by default 60 % of this machine's memory.
WIZ_WORKER_MEMORY_MB: int = _env_value(
    "WIZ_WORKER_MEMORY_MB", env.int, int(psutil.virtual_memory().total * 0.6) >> 20
)
# What a download must leave free on the models disk, in MiB: a disk filled to the last byte
# breaks the database and the logs too.
WIZ_DISK_RESERVE_MB: int = _env_value("WIZ_DISK_RESERVE_MB", env.int, 512)
WIZ_MAX_PROMPT_CHARS: int = _env_value("WIZ_MAX_PROMPT_CHARS", env.int, 32_000)
WIZ_MAX_CONTEXT: int = _env_value("WIZ_MAX_CONTEXT", env.int, 8192)
WIZ_DEFAULT_MAX_TOKENS: int = _env_value("WIZ_DEFAULT_MAX_TOKENS", env.int, 512)
WIZ_THREADS: int = _env_value("WIZ_THREADS", env.int, 0)  # 0: llama.cpp's own choice
# Answers one worker writes at once for each model it holds (its slots), and how many of
# them one person may hold while others wait (0: half the slots).
WIZ_PARALLEL: int = _env_value("WIZ_PARALLEL", env.int, 8)
WIZ_MAX_SLOTS_PER_USER: int = _env_value("WIZ_MAX_SLOTS_PER_USER", env.int, 0)
# Evaluated conversation prefixes a worker keeps in host memory once they leave the KV
# cache, so that a follow-up turn is not evaluated again (MiB, per loaded model).
WIZ_PROMPT_CACHE_MB: int = _env_value("WIZ_PROMPT_CACHE_MB", env.int, 512)
for _name, _value, _low, _high in (
    ("WIZ_PARALLEL", WIZ_PARALLEL, 1, 64),
    ("WIZ_MAX_SLOTS_PER_USER", WIZ_MAX_SLOTS_PER_USER, 0, 64),
    ("WIZ_PROMPT_CACHE_MB", WIZ_PROMPT_CACHE_MB, 0, 1 << 20),
):
    if not _low <= _value <= _high:
        raise ImproperlyConfigured(f"{_name} must be from {_low} to {_high}, not {_value}.")
# How long chunks are gathered before one frame is sent (seconds).
WIZ_CHUNK_INTERVAL: float = _env_value("WIZ_CHUNK_INTERVAL", env.float, 0.04)

# What an inference worker calls (it knows nothing of chats): the reapers of answers whose
# writer is gone, what it does once at its start, and who hears of its state every second.
WIZ_WORKER_HOOKS = {
    "reap": "chat.jobs.worker_reap",
    "reap_namesake": "chat.jobs.worker_reap_namesake",
    "started": "documents.embeddings.embeddings_sweep",
    "state": "models_admin.download_events.worker_state_announce",
}

# The longest one generation may run before RQ stops it.
WIZ_GENERATION_TIMEOUT: int = _env_value("WIZ_GENERATION_TIMEOUT", env.int, 3600)

# Logs go to standard output (supervisord passes them on): one line per HTTP request
# (wizweb.requests) and one per generation (chat.generations), as text or as JSON lines for a
# log collector. What people type and what keys say is never logged (see wizweb.log_format).
WIZ_LOG_FORMAT: str = _env_value("WIZ_LOG_FORMAT", env.str, "plain").strip().lower()
if WIZ_LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"WIZ_LOG_FORMAT must be plain or json, not {WIZ_LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "()": "wizweb.log_format.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        },
        "json": {
            "()": "wizweb.log_format.JsonLogFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": WIZ_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        # daphne's access log: wizweb.requests says the same with the user, and no query string.
        "django.channels.server": {"level": "WARNING"},
        # axes says INFO at every start and every failure; its WARNING per failure is enough.
        "axes": {"level": "WARNING"},
    },
}
