from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import UserFactory


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
