"""Every setting of the platform, read from the environment (and `.env` when present) in this one module.

Code reads `django.conf.settings`, never `os.environ`. Names from the seed guide keep their exact
spelling and defaults (PORT, JWT_EXPIRATION_HOURS, RATE_LIMIT_MAX, RATE_LIMIT_WINDOW, ...).
With debug off the process refuses to start on a missing or weak secret, so a production deploy
can never run on the development fallbacks below.
"""

from __future__ import annotations

import ipaddress
import math
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

# Django's generic classes (ModelAdmin[Device], QuerySet[Device], ModelForm[...]) subscriptable at run
# time, as django-stubs types them.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
load_dotenv(BASE_DIR / ".env", override=False)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use true or false.")


def env_int(name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} must be at most {maximum}.")
    return value


def env_float(name: str, default: float, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_secret(name: str, default: str = "") -> str:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path!r} cannot be read: {exc}") from None
    return env_str(name, default)


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of: {', '.join(choices)}.")
    return value


def env_modes(name: str, default: str, choices: tuple[str, ...], exclusive: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list of modes, each one of `choices`, at most one of `exclusive`."""
    modes = tuple(dict.fromkeys(part.strip().lower() for part in env_str(name, default).split(",") if part.strip()))
    unknown = [mode for mode in modes if mode not in choices]
    if not modes or unknown:
        raise ImproperlyConfigured(f"{name}={env_str(name, default)!r}: each mode must be one of {', '.join(choices)}.")
    if len([mode for mode in modes if mode in exclusive]) > 1:
        raise ImproperlyConfigured(f"{name}: choose at most one of {', '.join(exclusive)}.")
    return modes


def env_networks(name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated CIDRs (a bare address is a /32 or /128)."""
    networks = []
    for part in env_str(name).split(","):
        if not part.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {part.strip()!r} is not an IP address or CIDR network.") from None
    return tuple(networks)


# --- Core -----------------------------------------------------------------------------------
DEBUG = env_bool("DJANGO_DEBUG", False)
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

_DEV_SECRET_KEY = "dev-insecure-secret-key-change-me-for-production-0123456789"
_DEV_JWT_SECRET = "dev-insecure-jwt-secret-change-me-0123456789"
SECRET_KEY = env_secret("DJANGO_SECRET_KEY", _DEV_SECRET_KEY if DEBUG else "")
JWT_SECRET = env_secret("JWT_SECRET", _DEV_JWT_SECRET if DEBUG else "")
# Public defaults: a signing key seeded from one of them is never used with debug off (tokens.signing_keys).
DEVELOPMENT_JWT_SECRETS = (_DEV_JWT_SECRET,)


def refuse_weak_secrets(debug: bool, secret_key: str, jwt_secret: str) -> None:
    """Production must never run on a guessable key: fail at start-up, saying how to make one."""
    if debug:
        return
    if len(jwt_secret.encode()) < 32 or jwt_secret == _DEV_JWT_SECRET:
        raise ImproperlyConfigured(
            "JWT_SECRET is missing or weaker than 32 bytes. Make one with: "
            "openssl rand -base64 32  (or set DJANGO_DEBUG=true for local development)."
        )
    if len(secret_key) < 50 or secret_key == _DEV_SECRET_KEY or secret_key.startswith("django-insecure"):
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is missing, a default, or shorter than 50 characters. Make one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )


refuse_weak_secrets(DEBUG, SECRET_KEY, JWT_SECRET)

PORT = env_int("PORT", 3001, minimum=1)
PROXY_BASE_URL = env_str("PROXY_BASE_URL", f"http://localhost:{PORT}").rstrip("/")
LOG_LEVEL = env_str("LOG_LEVEL", "info").upper()
LOG_REQUEST_STAGES = env_bool("LOG_REQUEST_STAGES", DEBUG)

_proxy_host = urlparse(PROXY_BASE_URL).hostname or "localhost"
ALLOWED_HOSTS = [h.strip() for h in env_str("ALLOWED_HOSTS", f"localhost,127.0.0.1,[::1],{_proxy_host}").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in env_str("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]
# Peers whose forwarding header names the client (proxyproject/client_address.py): the load
# balancers in front of the gateway, nothing else. Empty: every peer is the client itself.
TRUSTED_PROXIES = env_networks("TRUSTED_PROXIES")
# The one forwarding header those proxies write; the other one is the client's to forge.
TRUSTED_PROXY_HEADER = env_choice("TRUSTED_PROXY_HEADER", "x-forwarded-for", ("x-forwarded-for", "forwarded"))

INSTALLED_APPS = [
    "daphne",
    # First of ours: its ready() prepares the metrics folder before the admin's autodiscovery imports
    # the modules that define metrics.
    "proxyproject",
    # django.contrib.admin, with the login form and site check of the optional second factor.
    "proxyproject.apps.ConsoleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "ninja",  # its templates and static files: the API docs load Swagger UI from this server, not a CDN, so the CSP stays 'self'
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "tokens",
    "gateway",
    "usage",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "proxyproject.content_security.ContentSecurityPolicyMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

# AxesBackend first: it refuses a locked-out client before any password hash is computed.
AUTHENTICATION_BACKENDS = ["proxyproject.login_lockout.LoginLockoutBackend", "django.contrib.auth.backends.ModelBackend"]

ROOT_URLCONF = "proxyproject.urls"
ASGI_APPLICATION = "proxyproject.asgi.application"
WSGI_APPLICATION = None

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

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60), conn_health_checks=True)}
# Seconds a new database connection may take to open (libpq's connect_timeout, whole seconds, at
# least 2) and a /v1 request waits for a database read before answering 503. Without it a database
# that accepts connections and never answers (a hung server, a pooler with no backend left) held
# start-up and every request that needed it for good, and a host dropping packets for 2 minutes.
DB_TIMEOUT = env_float("DB_TIMEOUT", 5.0, minimum=2.0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so servers started by tests in other processes see the same test data.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A peer that vanished without a reset (a failed-over host, a dropped route) is given up in
    # about a minute when idle (keepalives) and 30 s after data it never acknowledged
    # (tcp_user_timeout), rather than after the kernel's default of 15 minutes or more.
    DATABASES["default"]["OPTIONS"] = {
        **DATABASES["default"].get("OPTIONS", {}),
        "connect_timeout": math.ceil(DB_TIMEOUT),
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": 30_000,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, channels, Celery: Redis when REDIS_URL is set, embedded otherwise ---------------
REDIS_URL = env_str("REDIS_URL")
# A Redis Cluster is named by the URL's scheme (redis+cluster://host:port, rediss+cluster:// for TLS;
# any one node) or by REDIS_CLUSTER=true with a plain URL. The cache then uses the cluster too; the
# channel layer (channels_redis) and the Celery broker (kombu) cannot, so they need CHANNEL_REDIS_URL and
# CELERY_BROKER_URL naming a plain Redis (or, for Celery, another broker).
REDIS_CLUSTER = env_bool("REDIS_CLUSTER", False)
_redis_is_cluster = REDIS_CLUSTER or REDIS_URL.startswith(("redis+cluster://", "rediss+cluster://"))
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "gw")
if "{" in REDIS_KEY_PREFIX or "}" in REDIS_KEY_PREFIX:
    raise ImproperlyConfigured("REDIS_KEY_PREFIX must not hold { or }: a Redis Cluster would read it as the keys' hash tag.")
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 512, minimum=1)
REDIS_POOL_TIMEOUT = env_float("REDIS_POOL_TIMEOUT", 5.0, minimum=0.01)
# Seconds a Redis command (and a new connection) may take before the request is refused with 503.
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 2.0, minimum=0.05)
REDIS_CONNECT_TIMEOUT = env_float("REDIS_CONNECT_TIMEOUT", 1.0, minimum=0.05)
# /healthz?deep=1 runs its checks at once; each that has not answered within this many seconds is down.
HEALTH_CHECK_TIMEOUT = env_float("HEALTH_CHECK_TIMEOUT", 1.0, minimum=0.05)
CHANNEL_REDIS_URL = env_str("CHANNEL_REDIS_URL") or ("" if _redis_is_cluster else REDIS_URL)
if _redis_is_cluster and not CHANNEL_REDIS_URL:
    raise ImproperlyConfigured("REDIS_URL names a Redis Cluster: set CHANNEL_REDIS_URL to a plain Redis for the live feed.")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_KEY_PREFIX,
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": REDIS_CONNECT_TIMEOUT,
                "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
                **(
                    {"CONNECTION_FACTORY": "proxyproject.lib.cache_cluster.ClusterConnectionFactory"} if _redis_is_cluster else {}
                ),
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "gateway"}}
if CHANNEL_REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [CHANNEL_REDIS_URL], "prefix": f"{REDIS_KEY_PREFIX}:asgi"},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or ("" if _redis_is_cluster else (REDIS_URL or "filesystem://"))
if not CELERY_BROKER_URL:
    raise ImproperlyConfigured("REDIS_URL names a Redis Cluster, which Celery cannot use: set CELERY_BROKER_URL.")
CELERY_BROKER_DIR = VAR_DIR / "celery-broker"
if CELERY_BROKER_URL == "filesystem://":
    (CELERY_BROKER_DIR / "out").mkdir(parents=True, exist_ok=True)
    (CELERY_BROKER_DIR / "processed").mkdir(parents=True, exist_ok=True)
    (CELERY_BROKER_DIR / "control").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "out"),
        "data_folder_out": str(CELERY_BROKER_DIR / "out"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = (
        {"global_keyprefix": f"{REDIS_KEY_PREFIX}:celery:"} if CELERY_BROKER_URL.startswith("redis") else {}
    )
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE_FILE = str(VAR_DIR / "celerybeat-schedule")
CELERY_TIMEZONE = "UTC"

# --- Sessions, auth, security ---------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/admin/login/"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_HTTPS_PROXY", False) else None
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", SECURE_HSTS_SECONDS > 0)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
DATA_UPLOAD_MAX_MEMORY_SIZE = None
FIELD_ENCRYPTION_KEY = env_secret("FIELD_ENCRYPTION_KEY")
ADMIN_USERNAME = env_str("ADMIN_USERNAME")
ADMIN_PASSWORD = env_secret("ADMIN_PASSWORD")

# --- Operator console: login lockout (django-axes), websocket origins, browser policy ---------
# A username is locked after this many failures from anywhere, and a client address after this many
# failures for any usernames (proxyproject/login_lockout.py explains the growing cool-off).
ADMIN_LOGIN_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", 5, minimum=1)
ADMIN_LOGIN_COOLOFF_SECONDS = env_int("ADMIN_LOGIN_COOLOFF_SECONDS", 900, minimum=1)
ADMIN_LOGIN_COOLOFF_MAX_SECONDS = env_int("ADMIN_LOGIN_COOLOFF_MAX_SECONDS", 86400, minimum=1)
AXES_ENABLED = env_bool("ADMIN_LOGIN_LOCKOUT", True)
AXES_FAILURE_LIMIT = ADMIN_LOGIN_FAILURE_LIMIT
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_COOLOFF_TIME = "proxyproject.login_lockout.login_cool_off"
AXES_USE_ATTEMPT_EXPIRATION = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = True
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
# Axes counts failures per client address as TRUSTED_PROXIES defines it, like every other limit.
AXES_CLIENT_IP_CALLABLE = "proxyproject.lib.client_address.client_ip"
# Origins (scheme://host[:port]) besides the gateway's own that may open the operators' websockets.
WEBSOCKET_ALLOWED_ORIGINS = [o.strip().rstrip("/") for o in env_str("WEBSOCKET_ALLOWED_ORIGINS", "").split(",") if o.strip()]
CONTENT_SECURITY_POLICY_ENABLED = env_bool("CONTENT_SECURITY_POLICY_ENABLED", True)
# Console logins: a user with a TOTP device always gives its code; with this on, a superuser
# without one cannot log in (proxyproject/second_factor.py; enroll with manage.py enroll_totp).
ADMIN_TOTP_REQUIRED_FOR_SUPERUSERS = env_bool("ADMIN_TOTP_REQUIRED_FOR_SUPERUSERS", False)
OTP_TOTP_ISSUER = "LLM gateway"

# --- Operator sign-in with the company's OpenID Connect provider (proxyproject/operator_sign_in.py)
# Beside passwords: set the issuer, client id and secret of a confidential web client whose redirect
# URI is https://<gateway>/oidc/callback/. Group membership decides staff and superuser at every login.
OIDC_ISSUER = env_str("OIDC_ISSUER", "").rstrip("/")
OIDC_CLIENT_ID = env_str("OIDC_CLIENT_ID", "")
OIDC_CLIENT_SECRET = env_secret("OIDC_CLIENT_SECRET")
OIDC_SCOPES = env_str("OIDC_SCOPES", "openid email profile")
OIDC_PERSON_CLAIM = env_str("OIDC_PERSON_CLAIM", "email")
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups")
OIDC_STAFF_GROUPS = [g.strip() for g in env_str("OIDC_STAFF_GROUPS", "").split(",") if g.strip()]
OIDC_SUPERUSER_GROUPS = [g.strip() for g in env_str("OIDC_SUPERUSER_GROUPS", "").split(",") if g.strip()]
OPERATOR_SIGN_IN_OIDC = bool(OIDC_ISSUER and OIDC_CLIENT_ID)
# mozilla-django-oidc's names, derived from the ones above (endpoints come from the issuer's discovery).
OIDC_RP_CLIENT_ID = OIDC_CLIENT_ID
OIDC_RP_CLIENT_SECRET = OIDC_CLIENT_SECRET
OIDC_RP_SCOPES = OIDC_SCOPES
OIDC_RP_SIGN_ALGO = env_str("OIDC_SIGN_ALGORITHM", "RS256")
OIDC_USE_PKCE = True
OIDC_TIMEOUT = env_float("OIDC_TIMEOUT", 5.0, minimum=0.5)
OIDC_AUTHENTICATE_CLASS = "proxyproject.operator_sign_in.OperatorSignInRequestView"
OIDC_CALLBACK_CLASS = "proxyproject.operator_sign_in.OperatorSignInCallbackView"
LOGIN_REDIRECT_URL = "/admin/"
LOGIN_REDIRECT_URL_FAILURE = "/admin/login/?sign_in=failed"
# --- People sign in on their devices (ENROLLMENT_MODE including `oidc`; tokens/sign_in.py) -------
# The same provider as the console's as a rule, but another client: providers enable the device grant
# (RFC 8628) per client, mostly on "native" or "public" ones, while the console's is a web client. So
# the issuer is shared unless PEOPLE_OIDC_ISSUER says otherwise, the client has its own names (falling
# back to the console's when only one client is registered), and OIDC_PERSON_CLAIM / OIDC_GROUPS_CLAIM
# mean the same for both. `offline_access` asks for a provider refresh token, which the gateway uses at
# each device refresh to learn that an account was disabled.
# An empty value (as .env.example leaves them) counts as unset.
PEOPLE_OIDC_ISSUER = (env_str("PEOPLE_OIDC_ISSUER") or OIDC_ISSUER).rstrip("/")
PEOPLE_OIDC_CLIENT_ID = env_str("PEOPLE_OIDC_CLIENT_ID") or OIDC_CLIENT_ID
PEOPLE_OIDC_CLIENT_SECRET = env_secret("PEOPLE_OIDC_CLIENT_SECRET") or (
    "" if env_str("PEOPLE_OIDC_CLIENT_ID") else OIDC_CLIENT_SECRET
)
PEOPLE_OIDC_SCOPES = env_str("PEOPLE_OIDC_SCOPES") or "openid email profile offline_access"
# How long a started sign-in may wait for the person (the provider's own expiry is shorter when it says so).
PEOPLE_SIGN_IN_SECONDS = env_int("PEOPLE_SIGN_IN_SECONDS", 600, minimum=60)
# Polls of /auth/oidc/poll are limited per sign-in (a client polls about 12 times a minute), not per
# address, so people signing in behind one NAT do not share a budget; polls naming no live sign-in
# are limited per address (tokens/enrollment_limits.py). Both per ENROLLMENT_RATE_LIMIT_WINDOW.
PEOPLE_SIGN_IN_POLL_MAX = env_int("PEOPLE_SIGN_IN_POLL_MAX", 30, minimum=1)
PEOPLE_SIGN_IN_UNKNOWN_POLL_MAX = env_int("PEOPLE_SIGN_IN_UNKNOWN_POLL_MAX", 30, minimum=1)
if OPERATOR_SIGN_IN_OIDC:
    AUTHENTICATION_BACKENDS = [*AUTHENTICATION_BACKENDS, "proxyproject.operator_sign_in.OperatorSignInBackend"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- Upstream (Anthropic) -------------------------------------------------------------------
ANTHROPIC_API_KEY = env_secret("ANTHROPIC_API_KEY")
ANTHROPIC_BASE_URL = env_str("ANTHROPIC_BASE_URL", "https://api.anthropic.com").rstrip("/")
UPSTREAM_AUTH_HEADER = env_choice("UPSTREAM_AUTH_HEADER", "x-api-key", ("x-api-key", "authorization"))
UPSTREAM_CONNECT_TIMEOUT = env_float("UPSTREAM_CONNECT_TIMEOUT", 10.0, minimum=0.1)
UPSTREAM_READ_TIMEOUT = env_float("UPSTREAM_READ_TIMEOUT", 600.0, minimum=300.0)
UPSTREAM_MAX_CONNECTIONS = env_int("UPSTREAM_MAX_CONNECTIONS", 4096, minimum=1)
UPSTREAM_KEY_ROTATION_DAYS = env_int("UPSTREAM_KEY_ROTATION_DAYS", 30, minimum=1)
UPSTREAM_KEY_DRAIN_GRACE_SECONDS = env_int("UPSTREAM_KEY_DRAIN_GRACE_SECONDS", 900, minimum=0)
# How often each gateway process confirms its in-memory key pool (one Redis GET, or a reload without Redis).
UPSTREAM_KEY_POOL_CACHE_SECONDS = env_float("UPSTREAM_KEY_POOL_CACHE_SECONDS", 5.0, minimum=0.1)
# Request headers forwarded upstream besides Anthropic's and its clients' (gateway/headers.py), comma-separated.
UPSTREAM_EXTRA_REQUEST_HEADERS = tuple(
    name.strip().lower() for name in env_str("UPSTREAM_EXTRA_REQUEST_HEADERS").split(",") if name.strip()
)
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", 32 * 1024 * 1024, minimum=1024)
# Forward /v1 routes outside the gateway's route table (gateway/routes.py) instead of answering 404.
GATEWAY_FORWARD_UNKNOWN_ROUTES = env_bool("GATEWAY_FORWARD_UNKNOWN_ROUTES", False)

# --- Tokens ---------------------------------------------------------------------------------
JWT_EXPIRATION_HOURS = env_float("JWT_EXPIRATION_HOURS", 24.0, minimum=0.0001)
REFRESH_TOKEN_DAYS = env_float("REFRESH_TOKEN_DAYS", 30.0, minimum=0.0001)
SIGNING_KEY_ROTATION_DAYS = env_int("SIGNING_KEY_ROTATION_DAYS", 30, minimum=1)
# One of open / secret / approval for /bootstrap, and/or `oidc` for people signing in (tokens/enrollment_modes.py).
ENROLLMENT_MODE = ",".join(
    env_modes(
        "ENROLLMENT_MODE", "open" if DEBUG else "secret", ("open", "secret", "approval", "oidc"), ("open", "secret", "approval")
    )
)
BOOTSTRAP_SECRET = env_secret("BOOTSTRAP_SECRET")
ENROLLMENT_RATE_LIMIT_MAX = env_int("ENROLLMENT_RATE_LIMIT_MAX", 30, minimum=1)
ENROLLMENT_RATE_LIMIT_WINDOW = env_int("ENROLLMENT_RATE_LIMIT_WINDOW", 60000, minimum=1000)
REVOCATION_CACHE_SECONDS = env_float("REVOCATION_CACHE_SECONDS", 2.0, minimum=0.0)
if not DEBUG and "secret" in ENROLLMENT_MODE.split(",") and len(BOOTSTRAP_SECRET) < 16:
    raise ImproperlyConfigured(
        "ENROLLMENT_MODE=secret needs BOOTSTRAP_SECRET of at least 16 characters "
        "(openssl rand -base64 24), or choose ENROLLMENT_MODE=approval or open."
    )
# simplejwt builds and verifies the tokens; the signing key per `kid` comes from tokens.SigningKey
# (seeded from JWT_SECRET), so SIGNING_KEY here only satisfies simplejwt's own defaults.
SIMPLE_JWT = {
    "ALGORITHM": "HS256",
    "SIGNING_KEY": JWT_SECRET,
    "ACCESS_TOKEN_LIFETIME": timedelta(hours=JWT_EXPIRATION_HOURS),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=REFRESH_TOKEN_DAYS),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": False,
    "UPDATE_LAST_LOGIN": False,
    "USER_ID_CLAIM": "sub",
    "TOKEN_TYPE_CLAIM": "token_type",
    "JTI_CLAIM": "jti",
    "LEEWAY": 0,
    "AUTH_HEADER_TYPES": ("Bearer",),
}

# --- Policy: rate limits, spend, breaker ----------------------------------------------------
RATE_LIMIT_MAX = env_int("RATE_LIMIT_MAX", 100, minimum=1)
RATE_LIMIT_WINDOW = env_int("RATE_LIMIT_WINDOW", 60000, minimum=1000)
# With Redis, a busy process leases a share of a device's request limit and admits from it without a
# round trip, for at most this long (proxyproject/lib/ratelimit/leases.py); 0: one script per request.
RATE_LIMIT_LEASE_MS = env_int("RATE_LIMIT_LEASE_MS", 200, minimum=0)
TOKENS_PER_MINUTE_MAX = env_int("TOKENS_PER_MINUTE_MAX", 0, minimum=0)
DAILY_SPEND_CAP_USD = env_str("DAILY_SPEND_CAP_USD")
MONTHLY_SPEND_CAP_USD = env_str("MONTHLY_SPEND_CAP_USD")
WEEKLY_SPEND_CAP_USD = env_str("WEEKLY_SPEND_CAP_USD")
# clamp: serve what fits (max_tokens lowered); strict: refuse unless the whole bound fits; soft: never refuse.
SPEND_CAP_ENFORCEMENT = env_choice("SPEND_CAP_ENFORCEMENT", "clamp", ("clamp", "strict", "soft"))
# The least output a clamped request may be left with; below it the request is refused.
SPEND_CAP_MIN_OUTPUT_TOKENS = env_int("SPEND_CAP_MIN_OUTPUT_TOKENS", 1024, minimum=1)
CIRCUIT_BREAKER_FAILURE_THRESHOLD = env_int("CIRCUIT_BREAKER_FAILURE_THRESHOLD", 5, minimum=1)
CIRCUIT_BREAKER_RESET_TIMEOUT = env_float("CIRCUIT_BREAKER_RESET_TIMEOUT", 30.0, minimum=0.1)
CIRCUIT_BREAKER_SUCCESS_THRESHOLD = env_int("CIRCUIT_BREAKER_SUCCESS_THRESHOLD", 2, minimum=1)
# Distinct devices whose failures it takes to open the upstream's breaker (1: any one device can, as in the seed).
CIRCUIT_BREAKER_MIN_DEVICES = env_int("CIRCUIT_BREAKER_MIN_DEVICES", 2, minimum=1)
# How long a gateway process trusts the breaker state it last saw (Redis is read at most this often).
CIRCUIT_BREAKER_CACHE_SECONDS = env_float("CIRCUIT_BREAKER_CACHE_SECONDS", 1.0, minimum=0.0)

# --- Usage ----------------------------------------------------------------------------------
USAGE_FLUSH_INTERVAL = env_float("USAGE_FLUSH_INTERVAL", 1.0, minimum=0.01)
# thread: each gateway worker writes its queued records to the database in a thread of its own.
# process: gateway workers only queue them; `manage.py run_usage_writer` (one process) writes them.
USAGE_WRITER = env_choice("USAGE_WRITER", "thread", ("thread", "process"))
USAGE_BATCH_SIZE = env_int("USAGE_BATCH_SIZE", 500, minimum=1)
# With Redis, a worker gathers usage records this long and sends them in one RPUSH (usage/writer.py);
# a process killed outright loses what it gathered. 0: one push per record.
USAGE_PUSH_DELAY_MS = env_int("USAGE_PUSH_DELAY_MS", 3, minimum=0)
USAGE_SPOOL_DIR = Path(env_str("USAGE_SPOOL_DIR", str(VAR_DIR / "usage-spool")))
USAGE_RETENTION_DAYS = env_int("USAGE_RETENTION_DAYS", 90, minimum=1)
USAGE_WRITER_LEASE_SECONDS = env_float("USAGE_WRITER_LEASE_SECONDS", 60.0, minimum=0.1)
# The Redis usage queue is this many lists, each under its own hash tag (shard 0 is `{usage}`, as
# before shards): each gateway process pushes to one, so on a Redis Cluster the usage traffic spreads
# over the masters. One Redis gains nothing from more than one. Writers drain every shard up to
# USAGE_QUEUE_MAX_SHARDS whatever this says, so lowering it strands no record.
USAGE_QUEUE_MAX_SHARDS = 32
USAGE_QUEUE_SHARDS = env_int("USAGE_QUEUE_SHARDS", 16 if _redis_is_cluster else 1, minimum=1, maximum=USAGE_QUEUE_MAX_SHARDS)
USAGE_PRICE_CACHE_SECONDS = env_float("USAGE_PRICE_CACHE_SECONDS", 60.0, minimum=0.0)
# Crash-safe stream accounting: a stream's usage so far is queued when it starts, then again once
# USAGE_CHECKPOINT_TOKENS more output tokens or USAGE_CHECKPOINT_SECONDS have passed with new output.
# A checkpointed stream with no final record, whose process has not been heard from for
# USAGE_ORPHAN_STREAM_SECONDS, is recorded by the writer as interrupted (`gateway_crashed`).
USAGE_CHECKPOINT_TOKENS = env_int("USAGE_CHECKPOINT_TOKENS", 200, minimum=1)
USAGE_CHECKPOINT_SECONDS = env_float("USAGE_CHECKPOINT_SECONDS", 2.0, minimum=0.0)
USAGE_ORPHAN_STREAM_SECONDS = env_float("USAGE_ORPHAN_STREAM_SECONDS", 15.0, minimum=0.1)
SPEND_RESERVATION_TTL_SECONDS = env_int("SPEND_RESERVATION_TTL_SECONDS", 1800, minimum=1)

# --- Budget alerts --------------------------------------------------------------------------
# Percentages of each spend cap at which an alert is sent once per period (organizations and devices may override).
BUDGET_ALERT_THRESHOLDS = env_str("BUDGET_ALERT_THRESHOLDS") or "50,80,100"
# Every alert is posted here (as well as to its organization's own webhook), signed with the secret.
BUDGET_WEBHOOK_URL = env_str("BUDGET_WEBHOOK_URL")
BUDGET_WEBHOOK_SECRET = env_secret("BUDGET_WEBHOOK_SECRET")
if BUDGET_WEBHOOK_URL and not BUDGET_WEBHOOK_SECRET:
    raise ImproperlyConfigured("BUDGET_WEBHOOK_URL needs BUDGET_WEBHOOK_SECRET (or BUDGET_WEBHOOK_SECRET_FILE) to sign with.")
if BUDGET_WEBHOOK_URL and urlparse(BUDGET_WEBHOOK_URL).scheme.lower() not in ("http", "https"):
    raise ImproperlyConfigured("BUDGET_WEBHOOK_URL must be an http:// or https:// URL.")
BUDGET_WEBHOOK_TIMEOUT_SECONDS = env_float("BUDGET_WEBHOOK_TIMEOUT_SECONDS", 5.0, minimum=0.1)
# Attempts per alert and webhook, the n-th retry waiting BUDGET_WEBHOOK_RETRY_SECONDS * 2**(n-1).
BUDGET_WEBHOOK_MAX_ATTEMPTS = env_int("BUDGET_WEBHOOK_MAX_ATTEMPTS", 5, minimum=1)
BUDGET_WEBHOOK_RETRY_SECONDS = env_float("BUDGET_WEBHOOK_RETRY_SECONDS", 30.0, minimum=0.0)
# Told of every alert by email (as well as its organization's own recipients).
BUDGET_ALERT_EMAILS = tuple(part.strip() for part in env_str("BUDGET_ALERT_EMAILS").split(",") if part.strip())
EMAIL_BACKEND = env_str("EMAIL_BACKEND") or (
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend"
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "llm-gateway@localhost")

# --- Operations -----------------------------------------------------------------------------
METRICS_TOKEN = env_secret("METRICS_TOKEN")
# Without an operator credential (staff session or operator API key): /api/docs and /api/openapi.json,
# and the details of /healthz?deep=1 (anyone else gets its status only). Both public with debug on.
API_DOCS_PUBLIC = env_bool("API_DOCS_PUBLIC", DEBUG)
HEALTH_DETAILS_PUBLIC = env_bool("HEALTH_DETAILS_PUBLIC", DEBUG)
# Requests with an invalid Host header: at most one WARNING line per this many seconds per process,
# carrying the count of those not logged in between.
DISALLOWED_HOST_LOG_INTERVAL = env_float("DISALLOWED_HOST_LOG_INTERVAL", 60.0, minimum=0.0)
# Prometheus multiprocess mode: every worker process writes its samples to files in this folder and
# /metrics sums them, so the figures are right whichever worker answers the scrape. The platform's app
# config creates the folder and exports it for prometheus_client (proxyproject/apps.py).
METRICS_DIR = Path(env_str("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "metrics" / str(PORT))))
SHUTDOWN_GRACE_SECONDS = env_float("SHUTDOWN_GRACE_SECONDS", 30.0, minimum=0.0)
# uvicorn by measurement (see README, Benchmark); daphne stays one setting away.
ASGI_SERVER = env_choice("ASGI_SERVER", "uvicorn", ("uvicorn", "daphne"))
WEB_CONCURRENCY = env_int("WEB_CONCURRENCY", 1, minimum=1)
# HTTP limits the server enforces before a request reaches Django or /v1 (proxyproject/http_limits.py,
# applied by proxyproject/server.py): a huge or slow request head cannot grow or hold a worker.
HTTP_MAX_REQUEST_LINE_BYTES = env_int("HTTP_MAX_REQUEST_LINE_BYTES", 8 * 1024, minimum=256)
HTTP_MAX_HEADER_BYTES = env_int("HTTP_MAX_HEADER_BYTES", 32 * 1024, minimum=1024)
HTTP_MAX_HEADERS = env_int("HTTP_MAX_HEADERS", 100, minimum=10)
HTTP_HEADER_TIMEOUT_SECONDS = env_float("HTTP_HEADER_TIMEOUT_SECONDS", 10.0, minimum=0.1)
HTTP_BODY_IDLE_TIMEOUT_SECONDS = env_float("HTTP_BODY_IDLE_TIMEOUT_SECONDS", 30.0, minimum=0.1)
HTTP_KEEP_ALIVE_TIMEOUT_SECONDS = env_int("HTTP_KEEP_ALIVE_TIMEOUT_SECONDS", 5, minimum=1)
FAKE_UPSTREAM_PORT = env_int("FAKE_UPSTREAM_PORT", 4010, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "structured": {"()": "proxyproject.lib.logging.StructuredFormatter", "as_json": not DEBUG},
    },
    "filters": {"disallowed_host": {"()": "proxyproject.lib.logging.DisallowedHostLogFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.security.DisallowedHost": {"filters": ["disallowed_host"]},
        "django.db.backends": {"level": "INFO"},
        "daphne": {"level": "WARNING"},
        "asyncio": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},  # its INFO line per upstream request is noise on the hot path
    },
}
