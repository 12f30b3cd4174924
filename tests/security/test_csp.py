"""The Content-Security-Policy header, and templates that keep to it: no inline script, no inline
event handler, no inline style, no javascript: URL. (tests/security/test_csp_browser.py checks
the pages in Chromium, which enforces the policy.)"""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings
from django.test import Client

from tests.security.conftest import World

TEMPLATES = Path(settings.BASE_DIR) / "templates"
INLINE = {
    "inline <script>": re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I),
    "inline event handler": re.compile(r"<[^>]+\son[a-z]+\s*=", re.I),
    "style attribute": re.compile(r"<[^>]+\sstyle\s*=", re.I),
    "<style> element": re.compile(r"<style\b", re.I),
    "javascript: URL": re.compile(r"javascript:", re.I),
}


def test_templates_have_no_inline_scripts_handlers_or_styles() -> None:
    found = []
    for path in sorted(TEMPLATES.rglob("*.html")):
        text = re.sub(r"{#.*?#}", "", path.read_text(), flags=re.S)
        # {{ x|json_script:"id" }} renders <script type="application/json">: data, which the CSP allows.
        found += [f"{path.relative_to(TEMPLATES)}: {what}" for what, pattern in INLINE.items() if pattern.search(text)]
    assert found == []


def _policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


def test_pages_send_the_policy(world: World) -> None:
    owner = world.client("owner")
    for url in ("/accounts/login/", f"/studies/{world.a.study.slug}/", f"/s/{world.a.study.slug}/consent/"):
        response = (owner if url.startswith("/studies/") else Client()).get(url)
        policy = _policy(response)
        assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"], url
        assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"], url


def test_only_the_api_docs_and_the_inline_figures_allow_inline_styles(world: World) -> None:
    owner = world.client("owner")
    for url in ("/api/docs/", "/api/redoc/", f"/studies/{world.a.study.slug}/insight/",
                f"/studies/{world.a.study.slug}/insight/quality/"):
        policy = _policy(owner.get(url))
        assert policy["style-src"] == ["'self'", "'unsafe-inline'"], url
        assert policy["script-src"] == ["'self'"], url
    swagger_script = owner.get("/api/docs/?script=")
    assert swagger_script.status_code == 200 and "SwaggerUIBundle" in swagger_script.content.decode()
