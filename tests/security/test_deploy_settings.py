"""Production settings: `manage.py check --deploy` is clean, cookies are secure and HTTP-only, and
the cache is Redis when CACHE_URL names one (run in subprocesses with POLYPHONY_ENV=production)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

PRODUCTION = {
    "POLYPHONY_ENV": "production",
    # 50+ characters, many distinct ones: what `openssl rand -base64 48` gives.
    "SECRET_KEY": "kq3J9vXe2LZ8mT4bNw7RyUaHcPd6Gs1FoEiVt5Bx0QnMjKlWzYr-_+=!@#%^&*()",
    "ALLOWED_HOSTS": "polyphony.example.org",
    "DATABASE_URL": "postgres://127.0.0.1:5432/x",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Not what this process was given: the browser tests set DJANGO_ALLOW_ASYNC_UNSAFE for themselves.
    left_out = {*PRODUCTION, "CACHE_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    clean = {k: v for k, v in os.environ.items() if k not in left_out}
    return subprocess.run(
        [sys.executable, *args], cwd=Path(settings.BASE_DIR), capture_output=True, text=True, timeout=120,
        env={**clean, **env, "DJANGO_SETTINGS_MODULE": "config.settings"},
    )


def test_check_deploy_is_clean_in_production() -> None:
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_cookies_caches_and_policy() -> None:
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; print(json.dumps({"
        "'session': [s.SESSION_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY], "
        "'csrf': [s.CSRF_COOKIE_SECURE, s.CSRF_COOKIE_HTTPONLY], 'cache': s.CACHES['default'], "
        "'hsts': s.SECURE_HSTS_SECONDS, 'script': s.CONTENT_SECURITY_POLICY['DIRECTIVES']['script-src']}))"
    )
    result = _run(["-c", code], {**PRODUCTION, "CACHE_URL": "redis://127.0.0.1:6379/3"})
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["session"] == [True, True] and values["csrf"] == [True, True]
    assert values["cache"] == {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                               "LOCATION": "redis://127.0.0.1:6379/3"}
    assert values["hsts"] > 0 and values["script"] == ["'self'"]


def test_a_cache_url_that_is_not_redis_is_named() -> None:
    result = _run(["-c", "import django; django.setup()"], {**PRODUCTION, "CACHE_URL": "memcached://x:11211"})
    assert result.returncode != 0 and "CACHE_URL" in result.stderr


def test_the_embedded_default_keeps_the_local_memory_cache() -> None:
    code = "from django.conf import settings as s; print(s.CACHES['default']['BACKEND'])"
    result = _run(["-c", code], {"DATABASE_URL": os.environ.get("DATABASE_URL", "")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "django.core.cache.backends.locmem.LocMemCache"
