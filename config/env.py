"""Typed readers for settings from the environment that fail loudly, naming the variable."""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ImproperlyConfigured(f"Environment variable {name} is required but not set.")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"Environment variable {name} must be a boolean (true/false), got {raw!r}.")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"Environment variable {name} must be an integer, got {raw!r}.") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"Environment variable {name} must be a number, got {raw!r}.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not items:
        raise ImproperlyConfigured(f"Environment variable {name} must be a comma-separated list, got {raw!r}.")
    return items


def env_database(name: str, default_sqlite_path: str) -> dict[str, object]:
    """Parse DATABASE_URL; only PostgreSQL and SQLite are supported."""
    import dj_database_url

    raw = os.environ.get(name)
    if raw is None or raw == "":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": default_sqlite_path,
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
        }
    if not raw.startswith(("postgres://", "postgresql://", "sqlite://")):
        raise ImproperlyConfigured(
            f"Environment variable {name} must be a postgres:// or sqlite:// URL, got {raw.split(':')[0]!r}."
        )
    try:
        parsed = dict(dj_database_url.parse(raw, conn_max_age=60, conn_health_checks=False))
    except Exception as exc:  # dj_database_url raises several types for malformed URLs
        raise ImproperlyConfigured(f"Environment variable {name} is not a valid database URL: {exc}") from None
    if not parsed.get("NAME"):
        raise ImproperlyConfigured(f"Environment variable {name} must name a database.")
    if str(parsed.get("ENGINE", "")).endswith("postgresql"):
        # psycopg prepares a statement after it ran this often on one connection; the annotators'
        # hot statements (annotation.selectors.hot_cursor) gain most. 0 turns it off (PgBouncer < 1.21
        # in transaction mode).
        threshold = env_int("DATABASE_PREPARE_THRESHOLD", 5)
        parsed.setdefault("OPTIONS", {})["prepare_threshold"] = threshold or None
    return parsed
