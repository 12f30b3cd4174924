from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import UserFactory


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:
    """PBKDF2 costs about a second per user on these machines; tests need no slow hashing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def researcher(db):
    return UserFactory(username="alice")


@pytest.fixture
def other_researcher(db):
    return UserFactory(username="mallory")


@pytest.fixture
def api_client(researcher) -> APIClient:
    """An API client authenticated with the researcher's DRF token."""
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=researcher)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


CHROMIUM = "/usr/bin/chromium"  # Debian's package; `playwright install` cannot download browsers here


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium through Playwright, for the tests marked `browser`."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()
