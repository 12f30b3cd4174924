"""A participant in a real browser: Prolific link → consent → survey → instructions → ten judgments
with the keyboard only → completion code; then the export holds exactly those ten comparisons."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from annotation.models import Judgment, Participant
from elicitation.models import Study
from tests.factories import PromptFactory, ResponseFactory, StudyFactory, SurveyQuestionFactory, pair_create

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Playwright's sync API runs an event loop in this thread; the ORM calls made here between page
# actions are ordinary blocking calls, which Django would otherwise refuse inside a loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

PID = "5f3c9e1a2b7d4e0012345678"
PROMPTS = [
    "I have three exams next week and a part-time job. How should I plan my week?",
    "Explain to a ten-year-old why the sky is blue.",
    "My neighbour's dog barks all night. What can I do?",
    "Write a short, friendly reminder to a colleague about an overdue report.",
]
RESPONSES = [
    "Start by listing fixed commitments (shifts, exam times), then block two focused study sessions a day, "
    "hardest subject first. Keep one evening free to rest.",
    "Cram the night before each exam; sleep is overrated.",
    "Ask your manager for fewer shifts this week, and use a simple timetable: mornings for revision, "
    "afternoons for work, short review before bed.",
    "Sunlight is made of many colours. The air scatters blue light the most, so blue comes at us from every "
    "direction and the whole sky looks blue.",
]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def study(db) -> Study:
    study = StudyFactory(
        slug="week-planning", title="Which answer helps more?", judgments_per_participant=10,
        strength_labels=["slightly", "clearly", "much"], allow_ties=True,
        completion_code="CX7Q2P", redirect_url="",
    )
    for prompt_text in PROMPTS:
        prompt = PromptFactory(study=study, text=prompt_text)
        responses = [ResponseFactory(prompt=prompt, text=f"{text} ({prompt.pk})") for text in RESPONSES]
        for i, first in enumerate(responses):
            for second in responses[i + 1:]:
                pair_create(prompt=prompt, first=first, second=second)
    SurveyQuestionFactory(study=study, key="age_group", text="Your age group", kind="choice",
                          choices=["18-29", "30-49", "50+"], position=0)
    SurveyQuestionFactory(study=study, key="years_online", text="Years you have used the internet", kind="number",
                          choices=[], min_value=0, max_value=80, position=1)
    return study


# Keys pressed for each of the ten judgments: choice key, then strength key (none for a tie).
PRESSES = [("1", "q"), ("2", "e"), ("0", None), ("1", "w"), ("2", "q"),
           ("1", "e"), ("0", None), ("2", "w"), ("1", "q"), ("2", "e")]
CHOICE_OF_KEY = {"1": "a", "2": "b", "0": "tie"}
RATIONALE_AT, RATIONALE = 3, "Response 2 skips the point; 1 is clearer"
STRENGTH_OF_KEY = {"q": 1, "w": 2, "e": 3, None: None}


def test_participant_judges_with_the_keyboard_and_the_export_has_their_answers(
    live_server, browser, study: Study, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/s/{study.slug}/?PROLIFIC_PID={PID}&STUDY_ID=prolific-study&SESSION_ID=s-1")

    page.get_by_role("button", name="I agree").click()
    page.get_by_text("A few questions about you").wait_for()
    page.get_by_label("30-49").check()
    page.get_by_label("Years you have used the internet").fill("12")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("heading", name="Instructions").wait_for()
    page.get_by_role("button", name="Start").click()
    page.locator("#judge-form").wait_for()
    page.wait_for_load_state("load")  # judge.js is deferred: keys pressed before it runs are lost

    screenshot_desktop = True
    for number, (choice_key, strength_key) in enumerate(PRESSES):
        page.get_by_text(f"{number} of 10 done").wait_for()
        served_id = page.locator('input[name="served_id"]').get_attribute("value")
        if screenshot_desktop and number == 1:
            page.keyboard.press("1")
            page.keyboard.press("w")
            page.screenshot(path="/tmp/judge_desktop.png", full_page=True)
            screenshot_desktop = False
        page.keyboard.press(choice_key)
        if strength_key:
            page.keyboard.press(strength_key)
            assert page.locator(f'input[name="strength"][value="{STRENGTH_OF_KEY[strength_key]}"]').is_checked()
        else:
            assert page.locator('input[name="strength"]').first.is_disabled()
        assert page.locator(f'input[name="choice"][value="{CHOICE_OF_KEY[choice_key]}"]').is_checked()
        if number == RATIONALE_AT:
            # Keys typed in the reason box are text, not shortcuts; Ctrl+Enter submits from there.
            page.focus("#rationale")
            page.keyboard.type(RATIONALE)
            assert page.locator(f'input[name="choice"][value="{CHOICE_OF_KEY[choice_key]}"]').is_checked()
            page.keyboard.press("Control+Enter")
        else:
            page.keyboard.press("Enter")
        if number < len(PRESSES) - 1:
            page.wait_for_function(
                "id => document.querySelector('input[name=served_id]')?.value !== id", arg=served_id
            )

    page.locator("#completion-code").wait_for()
    assert page.locator("#completion-code").inner_text().strip() == "CX7Q2P"
    assert page.url.endswith(f"/s/{study.slug}/done/")

    participant = Participant.objects.get(study=study, external_id=PID)
    assert participant.judgment_count == 10 and participant.completed_at is not None
    assert Judgment.objects.filter(participant=participant).count() == 10

    path = tmp_path / "comparisons.jsonl"
    call_command("export_comparisons", study.slug, format="jsonl", output=str(path), pseudonymize=False)
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(lines) == 10
    assert {line["annotator"] for line in lines} == {PID}
    assert all(line["annotator_attributes"] == {"age_group": "30-49", "years_online": 12} for line in lines)
    lines.sort(key=lambda line: line["created_at"])
    assert [line["choice"] for line in lines] == [CHOICE_OF_KEY[c] for c, _ in PRESSES]
    assert [line["strength"] for line in lines] == [STRENGTH_OF_KEY[s] for _, s in PRESSES]
    assert [line["rationale"] or "" for line in lines] == ["" if i != RATIONALE_AT else RATIONALE for i in range(10)]
    # What was shown on the left is response_a of the exported comparison.
    shown = {j.response_a.text for j in Judgment.objects.select_related("response_a")}
    assert {line["response_a"] for line in lines} == shown


def _consent_survey_start(page: Any) -> None:
    """Agree, answer the survey (18-29, 3 years online), start: the judging form is ready for keys."""
    page.get_by_role("button", name="I agree").click()
    page.get_by_label("18-29").check()
    page.get_by_label("Years you have used the internet").fill("3")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Start").click()
    page.locator("#judge-form").wait_for()
    page.wait_for_load_state("load")  # judge.js is deferred: keys pressed before it runs are lost


def test_judge_page_layout_on_a_phone(live_server, browser, study: Study) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    page.goto(f"{live_server.url}/s/{study.slug}/?PROLIFIC_PID=phone-user")
    _consent_survey_start(page)
    # Tap a response card to choose it, then a strength.
    page.locator('.response[data-choice="b"]').click()
    page.get_by_label("Clearly").check()
    page.screenshot(path="/tmp/judge_phone.png", full_page=True)

    cards = page.locator(".response")
    first, second = cards.nth(0).bounding_box(), cards.nth(1).bounding_box()
    assert second["y"] >= first["y"] + first["height"]  # stacked, not side by side
    assert first["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    assert page.locator('input[name="choice"][value="b"]').is_checked()
    page.get_by_role("button", name="Submit").tap()
    page.get_by_text("1 of 10 done").wait_for()
    assert Judgment.objects.get().choice == "b"
    context.close()


def test_the_link_resumes_on_another_device_only_with_the_same_prolific_session(
    live_server, browser, study: Study
) -> None:
    """Another browser with the participant's PID alone is refused; the same Prolific session resumes."""
    link = f"{live_server.url}/s/{study.slug}/?PROLIFIC_PID={PID}&STUDY_ID=prolific-study"
    laptop = browser.new_context()
    page = laptop.new_page()
    page.goto(link + "&SESSION_ID=s-1")
    _consent_survey_start(page)
    page.get_by_text("0 of 10 done").wait_for()
    page.locator('.response[data-choice="a"]').click()
    page.get_by_label("Slightly").check()
    page.get_by_role("button", name="Submit").click()
    page.get_by_text("1 of 10 done").wait_for()

    stranger = browser.new_context().new_page()
    response = stranger.goto(link)
    assert response.status == 409
    stranger.get_by_role("heading", name="This id has already started the study in another browser session").wait_for()
    assert stranger.locator("#judge-form").count() == 0 and "1 of 10 done" not in stranger.content()

    phone = browser.new_context().new_page()
    phone.goto(link + "&SESSION_ID=s-1")
    phone.get_by_text("1 of 10 done").wait_for()
    assert phone.url.endswith(f"/s/{study.slug}/judge/")
    assert Participant.objects.filter(study=study).count() == 1 and Judgment.objects.count() == 1
    laptop.close()
