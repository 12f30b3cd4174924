"""The Content-Security-Policy in a real browser: Chromium enforces it, and reports every violation.

A researcher logs in through the form and opens every kind of page (the moral graph is drawn by
its script, the insight figures are inline SVG), a participant answers with the keyboard (htmx
posts with the CSRF token from the page), and the API docs render; no page may trip the policy.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.utils import timezone

from annotation.models import ValuesCard
from elicitation.models import MoralContext, MoralQuestion, Study
from modeling.models import AnalyticsSnapshot
from tests.factories import PromptFactory, ResponseFactory, StudyFactory, UserFactory, pair_create

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the ORM between page actions (see tests/browser)

PASSWORD = "correct horse battery staple"
# Recorded before any page script runs; Playwright's init scripts are not subject to the page's CSP.
LISTEN = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""
# An inline figure as matplotlib writes it: a <style> element and style attributes.
FIGURE = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><style>*{stroke-linecap:butt}</style>'
          '<rect id="styled" width="10" height="10" style="fill: #ff0000"/></svg>')


@pytest.fixture
def study(settings: Any) -> Study:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    owner = UserFactory(username="csp-owner")
    study = StudyFactory(owner=owner, slug="csp-study", title="CSP study", judgments_per_participant=2,
                         strength_labels=[], moral_graph_mode=Study.MoralGraphMode.OFF)
    for p in range(2):
        prompt = PromptFactory(study=study, text=f"Prompt {p}")
        first, second = ResponseFactory(prompt=prompt), ResponseFactory(prompt=prompt)
        pair_create(prompt=prompt, first=first, second=second)
    question = MoralQuestion.objects.create(study=study, text="A moral question")
    context = MoralContext.objects.create(question=question, text="A context")
    for i in range(2):
        ValuesCard.objects.create(context=context, status=ValuesCard.Status.CONFIRMED, title=f"Value {i}",
                                  description="A value.", attention_policies=["MOMENTS when it matters"],
                                  interview_backend=ValuesCard.Backend.RESEARCHER, confirmed_at=timezone.now())
    # The least the dashboard shows a figure for (the figures' own tests compute real analyses).
    data = {"participants": [], "groups": [], "agreement": {"groups": []}, "counts": {"pairs_with_overlap": 0}}
    AnalyticsSnapshot.objects.create(study=study, status=AnalyticsSnapshot.Status.DONE, data=data,
                                     plots={"agreement": FIGURE}, finished_at=timezone.now())
    return study


def _violations(page: Any) -> list[str]:
    return page.evaluate("window.__csp")


def test_pages_run_under_the_content_security_policy(live_server: Any, browser: Any, study: Study) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(LISTEN)
    page = context.new_page()
    seen: dict[str, list[str]] = {}

    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("csp-owner")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="CSP study").first.wait_for()
    seen["study list"] = _violations(page)

    context_id = MoralContext.objects.get(question__study=study).pk
    for path in ("", "edit/", "survey/", "attention-checks/", "import/", "export/", "model/", "values/",
                 f"values/contexts/{context_id}/", "insight/", "insight/quality/", "insight/rankings/"):
        page.goto(f"{live_server.url}/studies/{study.slug}/{path}")
        page.wait_for_load_state("networkidle")
        seen[path or "study detail"] = _violations(page)
        if path == "":
            page.focus("#participant-link")  # the copy field selects itself (a static script)
            assert page.evaluate("document.activeElement.selectionEnd") > 0
        if path.startswith("values/contexts/"):
            page.locator("#moral-graph .mg-node").first.wait_for()  # drawn by moral_graph.js
        if path == "insight/":
            fill = page.evaluate("getComputedStyle(document.getElementById('styled')).fill")
            assert fill == "rgb(255, 0, 0)", "inline SVG figure lost its style attributes"

    page.goto(f"{live_server.url}/api/docs/")
    page.locator(".opblock").first.wait_for()
    seen["swagger"] = _violations(page)
    page.goto(f"{live_server.url}/api/redoc/")
    page.get_by_text("Polyphony API").first.wait_for()
    # Redoc's footer logo is an image on cdn.redoc.ly: blocking it is the policy working (no page
    # of ours loads anything from another origin).
    seen["redoc"] = [v for v in _violations(page) if not v.startswith("img-src https://cdn.redoc.ly/")]

    participant_context = browser.new_context()
    participant_context.add_init_script(LISTEN)
    participant = participant_context.new_page()
    participant.goto(f"{live_server.url}/s/{study.slug}/?pid=csp-participant")
    participant.get_by_role("button", name="I agree").click()
    participant.get_by_role("button", name="Start").click()
    participant.locator("#judge-form").wait_for()
    participant.wait_for_load_state("load")  # judge.js is deferred: keys pressed before it runs are lost
    participant.wait_for_load_state("load")  # judge.js (deferred) listens for the keys
    for done in range(2):
        participant.get_by_text(f"{done} of 2 done").wait_for()
        participant.keyboard.press("1")
        participant.keyboard.press("Enter")  # htmx posts it, with the CSRF token from <body hx-headers>
    participant.locator("#completion-code").wait_for()
    seen["participant"] = _violations(participant)

    assert {name: found for name, found in seen.items() if found} == {}
