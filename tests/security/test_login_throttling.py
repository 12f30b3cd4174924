"""Login throttling (django-axes): five wrong passwords for one username from one address lock that
pair out for 15 minutes, even with the right password; a success resets the count."""

from __future__ import annotations

from typing import Any

from axes.models import AccessAttempt
from django.test import Client

from tests.factories import UserFactory

PASSWORD = "correct horse battery staple"


def _login(client: Client, username: str, password: str, ip: str = "203.0.113.7") -> Any:
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=ip)


def test_five_failures_lock_the_username_from_that_address(db: Any, settings: Any) -> None:
    assert settings.AXES_FAILURE_LIMIT == 5
    UserFactory(username="alice")
    client = Client()
    for _ in range(4):
        assert _login(client, "alice", "wrong").status_code == 200  # the form again, with its error

    locked = _login(client, "alice", "wrong")
    right_password = _login(client, "alice", PASSWORD)

    assert locked.status_code == 429 and right_password.status_code == 429
    assert "Too many failed log-ins" in right_password.content.decode()
    assert "_auth_user_id" not in client.session
    # Another address may still log in as alice (the lock is per username and address).
    elsewhere = _login(Client(), "alice", PASSWORD, ip="198.51.100.2")
    assert elsewhere.status_code == 302


def test_a_successful_login_resets_the_failures(db: Any) -> None:
    UserFactory(username="bob")
    client = Client()
    for _ in range(4):
        _login(client, "bob", "wrong")
    assert _login(client, "bob", PASSWORD).status_code == 302
    assert not AccessAttempt.objects.filter(username="bob").exists()
    for _ in range(4):
        assert _login(Client(), "bob", "wrong").status_code == 200
    assert _login(Client(), "bob", PASSWORD).status_code == 302
