"""Moral-graph mode in headless Chromium: a participant goes through the guided interview, edits
and confirms their values card, votes on every edge offered, answers the legitimacy questions and
gets the completion code; the researcher's graph page draws the values and opens a card on click.
HTML in card text is shown as text and never runs. Screenshots at phone and desktop widths go to
/tmp/moral_*.png."""

from __future__ import annotations

import os
import uuid

import pytest
from django.test import Client

from annotation.models import LegitimacyAnswer, Participant, ValuesCard, WiserVote
from elicitation.models import Study
from modeling.moral_services import moral_graph_snapshots_create
from tests.factories import ParticipantFactory
from tests.moral.conftest import MoralContextFactory, MoralQuestionFactory, ValuesCardFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Playwright's sync API runs an event loop in this thread; the ORM calls made here between page
# actions are ordinary blocking calls, which Django would otherwise refuse inside a loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

PID = "moral-e2e-participant"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
XSS = '<img src=x onerror="window.__xss = 1">Patience'


@pytest.fixture(scope="module", autouse=True)
def _embedder_loaded() -> None:
    """Load the embedding model before the browser waits on a page: a cold load takes 10 to 40 s on
    this machine, which the first card confirmed in a fresh web process pays once."""
    from django.conf import settings

    from modeling.embedding_cache import embedder_get

    embedder_get(model_name=settings.POLYPHONY_EMBEDDING_MODEL)


@pytest.fixture
def study(researcher) -> Study:
    study = Study.objects.create(
        owner=researcher, title="What should an assistant care about?", slug="values-e2e",
        status=Study.Status.OPEN, moral_graph_mode=Study.MoralGraphMode.ONLY, completion_code="MG7Q2P",
        instructions="Think about what a wise friend would do.",
    )
    question = MoralQuestionFactory(
        study=study, text="A user asks an AI assistant whether to leave their job to care for a parent.")
    context = MoralContextFactory(question=question, text="When the user feels torn between duty and their future")
    ValuesCardFactory(context=context, title="Respect for autonomy",
                      description="Helping the person reach their own decision rather than deciding for them.",
                      attention_policies=["CHOICES the person can still make", "PRESSURES from family expectations"])
    ValuesCardFactory(context=context, title="Financial realism",
                      description="Being clear about money so the decision does not cause hardship later.",
                      attention_policies=["COSTS of care over the coming years", "SAVINGS that could run out"])
    return study


def test_guided_interview_and_voting_end_to_end(live_server, browser, study: Study) -> None:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{live_server.url}/s/{study.slug}/?pid={PID}")
    page.get_by_role("button", name="I agree").click()
    # Until annotation.views routes `only` studies here itself, open the values part by its link.
    page.goto(f"{live_server.url}/s/{study.slug}/values/")
    page.get_by_role("heading", name="What matters to you").wait_for()
    page.get_by_role("button", name="Start").click()

    page.get_by_role("heading", name="What should a good response attend to?").wait_for()
    page.screenshot(path="/tmp/moral_interview_desktop.png", full_page=True)
    page.get_by_label("Imagine you are advising someone").fill(
        "Whether the person feels heard. They need time to think, not a verdict.")
    page.get_by_label("Think of a time you").fill("My neighbour just listened and asked what scared me most.")
    page.get_by_role("button", name="Continue to my values card").click()

    page.get_by_role("heading", name="Your values card").wait_for()
    assert page.get_by_label("Description").input_value() == "Whether the person feels heard."
    page.get_by_label("Title").fill(XSS)
    page.get_by_label("Description").fill("Giving someone room to think before they decide.")
    page.get_by_label("What a person with this value pays attention to").fill(
        "fears the person has not said out loud\nMOMENTS when a quick answer would close the question")
    page.screenshot(path="/tmp/moral_card_desktop.png", full_page=True)
    page.get_by_role("button", name="Confirm my values card").click()
    page.get_by_text("Tick the box").wait_for()  # forgot to confirm: told, nothing lost
    assert page.get_by_label("Description").input_value() == "Giving someone room to think before they decide."
    page.get_by_label("This card captures what I care about").check()
    page.get_by_role("button", name="Confirm my values card").click()

    # Three values in the context: one question per pair of them.
    answers = ["B is wiser", "Equally wise", "B is not wiser"]
    for number, answer in enumerate(answers):
        page.get_by_text(f"{number} of 3 done").wait_for()  # 5 asked, but only 3 pairs exist
        if number == 0:
            page.screenshot(path="/tmp/moral_vote_desktop.png", full_page=True)
        page.get_by_label(answer).check()
        if number == 1:
            page.get_by_label("Why?").fill("Both matter here.")
        page.get_by_role("button", name="Submit").click()

    page.get_by_role("heading", name="Two last questions").wait_for()
    assert "MG7Q2P" not in page.content()
    page.get_by_role("group", name="Do you feel your values are represented").get_by_label("Yes").check()
    page.get_by_role("group", name="Was this process a fair way").get_by_label("Yes").check()
    page.get_by_role("button", name="Finish").click()
    page.locator("#completion-code").wait_for()
    assert page.locator("#completion-code").inner_text().strip() == "MG7Q2P"

    participant = Participant.objects.get(study=study, external_id=PID)
    card = ValuesCard.objects.get(participant=participant)
    assert card.title == XSS and card.status == ValuesCard.Status.CONFIRMED
    assert card.attention_policies[0] == "FEARS the person has not said out loud"
    votes = WiserVote.objects.filter(participant=participant).order_by("id")
    assert [v.answer for v in votes] == ["wiser", "equal", "not_wiser"] and votes[1].reason == "Both matter here."
    assert participant.completed_at is not None and LegitimacyAnswer.objects.filter(participant=participant).exists()
    assert dialogs == [] and page.evaluate("window.__xss") is None
    context.close()


def _researcher_context(browser: object, live_server: object, researcher: object, viewport: dict) -> object:
    client = Client()
    client.force_login(researcher)
    context = browser.new_context(viewport=viewport, device_scale_factor=2 if viewport == PHONE else 1,
                                  is_mobile=viewport == PHONE, has_touch=viewport == PHONE)
    host = live_server.url.split("//", 1)[1].split(":")[0]
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "domain": host, "path": "/"}])
    return context


@pytest.mark.parametrize(("name", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_the_graph_page_draws_values_and_opens_a_card(live_server, browser, study: Study, researcher, name, viewport) -> None:
    context_row = study.moral_questions.get().contexts.get()
    autonomy, realism = ValuesCard.objects.order_by("id")
    patience = ValuesCardFactory(context=context_row, title=XSS, description="Room to think.",
                                 attention_policies=["FEARS not said out loud"])
    ValuesCardFactory(context=context_row, title="Letting them think", canonical=patience)
    for i in range(4):
        voter = ParticipantFactory(study=study, external_id=f"voter-{i}")
        for a, b in ((realism, autonomy), (autonomy, patience), (realism, patience)):
            WiserVote.objects.create(participant=voter, context=context_row, from_card=a, to_card=b, answer="wiser",
                                submission_id=uuid.uuid4())
    moral_graph_snapshots_create(study_id=study.pk)

    context = _researcher_context(browser, live_server, researcher, viewport)
    page = context.new_page()
    page.goto(f"{live_server.url}/studies/{study.slug}/values/contexts/{context_row.pk}/")
    nodes = page.locator("#moral-graph .mg-node")
    nodes.first.wait_for()
    assert nodes.count() == 3
    radii = [float(r) for r in page.eval_on_selector_all("#moral-graph circle", "cs => cs.map(c => c.getAttribute('r'))")]
    assert radii[0] == max(radii)  # drawn best first: the biggest circle is the top value
    assert page.locator("#moral-graph line.mg-edge").count() == 3
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    page.screenshot(path=f"/tmp/moral_graph_{name}.png", full_page=True)
    page.locator(".graph-box").screenshot(path=f"/tmp/moral_graph_box_{name}.png")
    page.get_by_role("button", name=XSS.split(">", 1)[0] + ">Patience", exact=False).first.click()
    page.locator("#card-panel").get_by_text("Letting them think").wait_for()  # its member
    assert page.locator("#card-panel .values-card-title").inner_text() == XSS
    page.locator("#card-panel").screenshot(path=f"/tmp/moral_graph_card_{name}.png")
    assert page.evaluate("window.__xss") is None
    page.goto(f"{live_server.url}/studies/{study.slug}/values/")
    page.get_by_role("heading", name="Winning values").wait_for()
    page.screenshot(path=f"/tmp/moral_overview_{name}.png", full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    context.close()


def test_interview_and_vote_pages_on_a_phone(live_server, browser, study: Study) -> None:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(f"{live_server.url}/s/{study.slug}/?pid=phone-user")
    page.get_by_role("button", name="I agree").click()
    page.goto(f"{live_server.url}/s/{study.slug}/values/")
    page.get_by_role("button", name="Start").tap()
    page.get_by_role("heading", name="What should a good response attend to?").wait_for()
    page.screenshot(path="/tmp/moral_interview_phone.png")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.get_by_label("Imagine you are advising someone").fill("Money. Being clear about what care will cost.")
    page.get_by_role("button", name="Continue to my values card").tap()
    # Nearly the seeded "Financial realism" card: the similar-cards step offers it.
    page.get_by_label("Title").fill("Financial realism")
    page.get_by_label("Description").fill("Being clear about money so that the decision does not cause hardship later.")
    page.get_by_label("What a person with this value pays attention to").fill(
        "COSTS of care over the coming years\nSAVINGS that could run out")
    page.get_by_label("This card captures what I care about").check()
    page.screenshot(path="/tmp/moral_card_phone.png")
    page.get_by_role("button", name="Confirm my values card").tap()
    page.get_by_role("heading", name="Others wrote similar values").wait_for()
    page.screenshot(path="/tmp/moral_similar_phone.png", full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.get_by_label("This one captures my value").check()
    page.get_by_role("button", name="Continue").tap()
    page.get_by_text("0 of 1 done").wait_for()  # their value joined "Financial realism": two values, one pair
    page.screenshot(path="/tmp/moral_vote_phone.png")  # the first screen a participant sees
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    cards = page.locator(".upgrade .values-card")
    first, second = cards.nth(0).bounding_box(), cards.nth(1).bounding_box()
    assert second["y"] >= first["y"] + first["height"]  # stacked on a phone
    card = ValuesCard.objects.get(participant__external_id="phone-user")
    assert card.canonical == ValuesCard.objects.get(title="Financial realism", participant=None)
    context.close()


def test_llm_interview_in_the_browser_then_a_timeout_falls_back(live_server, browser, study: Study, settings) -> None:
    from tests.moral.llm_server import Reply, fake_llm_server

    with fake_llm_server() as llm:
        settings.POLYPHONY_LLM_BASE_URL, settings.POLYPHONY_LLM_MODEL = llm.base_url, "test-model"
        settings.POLYPHONY_LLM_TIMEOUT = 1.0
        llm.script = [Reply(content="What would you want the assistant to notice first?"),
                      Reply(content="Too late.", delay_s=3.0)]
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        page.goto(f"{live_server.url}/s/{study.slug}/?pid=llm-user")
        page.get_by_role("button", name="I agree").click()
        page.goto(f"{live_server.url}/s/{study.slug}/values/")
        page.get_by_role("button", name="Start").click()
        page.get_by_role("heading", name="A short conversation about what matters").wait_for()
        page.get_by_label("Your answer").fill("That I am not rushed into a choice.")
        page.get_by_role("button", name="Send").click()
        page.get_by_text("What would you want the assistant to notice first?").wait_for()
        assert page.get_by_label("Your answer").input_value() == ""
        page.screenshot(path="/tmp/moral_chat_desktop.png", full_page=True)
        page.get_by_label("Your answer").fill("Whether my family is heard too.")
        page.get_by_role("button", name="Send").click()
        page.get_by_text("The AI interviewer is not available right now").wait_for()
        answer = page.get_by_label("Imagine you are advising someone").input_value()
        assert "not rushed into a choice" in answer and "my family is heard too" in answer
        page.screenshot(path="/tmp/moral_fallback_desktop.png", full_page=True)
        context.close()
