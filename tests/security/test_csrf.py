"""CSRF: every form carries the token, a POST without it is refused, htmx sends it from the page.

The CSRF cookie is HTTP-only (settings), so no script can read it; htmx sends the token that
base.html puts on <body hx-headers>, and these tests send it the same way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from annotation.models import Judgment
from tests.security.conftest import World

TEMPLATES = Path(settings.BASE_DIR) / "templates"


def _template_files() -> list[Path]:
    return sorted(TEMPLATES.rglob("*.html"))


def test_every_post_form_in_the_templates_has_the_csrf_token() -> None:
    missing, checked = [], 0
    for path in _template_files():
        text = path.read_text()
        for form in re.finditer(r"<form\b[^>]*>(.*?)</form>", text, flags=re.S | re.I):
            if re.search(r'method\s*=\s*"post"', form.group(0)[:300], flags=re.I):
                checked += 1
                if "{% csrf_token %}" not in form.group(1):
                    missing.append(f"{path.relative_to(TEMPLATES)}: {form.group(0)[:80]!r}")
    assert missing == []
    assert checked > 20  # the pattern does find the forms


def test_the_page_gives_htmx_the_token_and_the_cookie_is_http_only(world: World) -> None:
    client = world.client("anonymous", enforce_csrf_checks=True)
    response = client.get(f"/s/{world.a.study.slug}/consent/")
    assert response.status_code == 200
    token = _hx_token(response.content.decode())
    assert token
    assert response.cookies[settings.CSRF_COOKIE_NAME]["httponly"] is True
    assert response.cookies[settings.CSRF_COOKIE_NAME]["samesite"] == "Lax"


def _hx_token(html: str) -> str:
    match = re.search(r"<body hx-headers='([^']*)'", html)
    assert match, "base.html puts the CSRF token on <body hx-headers>"
    return json.loads(match.group(1))["X-CSRFToken"]


@pytest.mark.parametrize("role,path,data", [
    ("anonymous", "/accounts/login/", {"username": "owner", "password": "correct horse battery staple"}),
    ("owner", "/studies/new/", {"title": "Forged"}),
    ("owner", "/studies/{slug}/status/", {"status": "closed"}),
    ("owner", "/accounts/logout/", {}),
    ("participant_session", "/s/{slug}/withdraw/", {"confirm": "yes"}),
    ("anonymous", "/s/{slug}/consent/", {"decision": "agree"}),
])
def test_a_post_without_the_token_is_refused(world: World, role: str, path: str, data: dict[str, Any]) -> None:
    client = world.client(role, enforce_csrf_checks=True)
    before = Judgment.objects.count(), world.a.study.participants.count()

    response = client.post(path.format(slug=world.a.study.slug), data)

    assert response.status_code == 403
    assert (Judgment.objects.count(), world.a.study.participants.count()) == before
    world.a.study.refresh_from_db()
    assert world.a.study.status == "open"


def test_a_session_api_call_without_the_token_is_refused(world: World) -> None:
    client = world.client("owner", enforce_csrf_checks=True)
    response = client.patch(f"/api/v1/studies/{world.a.study.slug}", {"title": "Forged"},
                            content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    world.a.study.refresh_from_db()
    assert world.a.study.title == "Secret study alpha title"


def test_a_judgment_posted_by_htmx_with_the_pages_token_is_stored(world: World) -> None:
    """The browser path: the judgment page, then an htmx POST with the token from <body hx-headers>."""
    type(world.a.study).objects.filter(pk=world.a.study.pk).update(moral_graph_mode="off")
    client = world.client("participant_session", enforce_csrf_checks=True)
    page = client.get(f"/s/{world.a.study.slug}/judge/")
    assert page.status_code == 200
    token = _hx_token(page.content.decode())
    served_id = re.search(r'name="served_id" value="([^"]+)"', page.content.decode()).group(1)
    data = {"served_id": served_id, "choice": "a", "strength": "1"}
    url = f"/s/{world.a.study.slug}/judge/"

    refused = client.post(url, data, HTTP_HX_REQUEST="true")
    stored = client.post(url, data, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token)

    assert refused.status_code == 403
    assert stored.status_code == 200
    assert Judgment.objects.filter(served_pair_id=served_id).count() == 1


def test_the_login_form_works_with_its_token(db: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    page = client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    response = client.post("/accounts/login/", {"username": "nobody", "password": "x", "csrfmiddlewaretoken": token})
    assert response.status_code == 200  # the form again, with its error: CSRF let it through
    assert "enter a correct username and password" in response.content.decode().lower()
