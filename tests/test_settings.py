"""Production settings fail loudly, naming the variable that is missing or malformed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

GOOD = {
    "POLYPHONY_ENV": "production",
    "SECRET_KEY": "x" * 64,
    "ALLOWED_HOSTS": "polyphony.example.org",
    "DATABASE_URL": "postgres://127.0.0.1:5432/test",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
}


def _import_settings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in GOOD}
    return subprocess.run(
        [sys.executable, "-c", "import django; from django.conf import settings; settings.DATABASES"],
        env={**clean, **env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True, text=True, timeout=60,
    )


def test_production_settings_load_with_every_variable() -> None:
    assert _import_settings(GOOD).returncode == 0


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "CELERY_BROKER_URL"])
def test_missing_production_variable_is_named(missing: str) -> None:
    env = {k: v for k, v in GOOD.items() if k != missing}
    result = _import_settings(env)
    assert result.returncode != 0
    assert missing in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [("DATABASE_URL", "mysql://nope/db"), ("CELERY_BROKER_URL", "kafka://x"), ("SECURE_HSTS_SECONDS", "an hour")],
)
def test_malformed_variable_is_named(name: str, value: str) -> None:
    result = _import_settings({**GOOD, name: value})
    assert result.returncode != 0
    assert name in result.stderr
