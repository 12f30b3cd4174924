"""Text from researchers and participants is shown escaped on every page, never as markup.

Each kind of text (study title, prompt, response, survey question and answer, rationale, moral
question and context, values card) gets its own <script> payload; every HTML page of the matrix is
fetched by whoever may see it, and the pages that re-show what a participant typed are posted
with an error so the form comes back filled in. No page may hold a payload raw; each payload must
be found escaped on some page (so the check looked where the text is).
"""

from __future__ import annotations

import html

from django.urls import reverse

from annotation.models import Judgment, Participant, ValuesCard
from elicitation.models import Prompt, Response, Study, SurveyQuestion
from tests.factories import SurveyQuestionFactory
from tests.security.conftest import World
from tests.security.test_access_matrix import MATRIX, PARTICIPANT, PUBLIC, _body, _url


def _payload(field: str) -> str:
    return f'<script>alert("{field}")</script><img src=x onerror=alert(1)>'


FIELDS = ["title", "prompt", "response", "survey_question", "survey_answer", "rationale", "question", "context",
          "card_title", "card_description", "card_policy", "attribute"]


def _plant(world: World) -> None:
    a = world.a
    Study.objects.filter(pk=a.study.pk).update(title=_payload("title"), description=_payload("title"),
                                               consent_text=_payload("title"), instructions=_payload("title"))
    Prompt.objects.filter(study=a.study).update(text=_payload("prompt"))
    Response.objects.filter(prompt__study=a.study).update(text=_payload("response"))
    SurveyQuestion.objects.filter(study=a.study).update(text=_payload("survey_question"))
    Judgment.objects.filter(study=a.study).update(rationale=_payload("rationale"))
    Participant.objects.filter(pk=a.participant.pk).update(attributes={"age": _payload("attribute")})
    a.question.text = _payload("question")
    a.question.save(update_fields=["text"])
    a.context.text = _payload("context")
    a.context.save(update_fields=["text"])
    ValuesCard.objects.filter(pk=a.seed_card.pk).update(
        title=_payload("card_title"), description=_payload("card_description"),
        attention_policies=[_payload("card_policy")],
    )


def _pages(world: World) -> dict[str, str]:
    """Every HTML page of the matrix (GET), as the role that sees most of it."""
    pages = {}
    for name, route in MATRIX.items():
        if name.startswith("api-") or route.kind == PUBLIC:
            continue
        role = "participant_session" if route.kind == PARTICIPANT else "owner"
        for call in route.calls:
            if call.method != "get":
                continue
            client = world.client(role)
            url = _url(name, route, world)
            response = client.get(url, **({"HTTP_HX_REQUEST": "true"} if call.htmx else {}), follow=not call.htmx)
            if response.get("Content-Type", "").startswith("text/html"):
                pages[f"GET {url}{' htmx' if call.htmx else ''}"] = _body(response)
    return pages


def _refilled_forms(world: World) -> dict[str, str]:
    """The participant pages that show back what was typed, after a submission with an error."""
    a, pages = world.a, {}
    client = world.client("participant_session")
    SurveyQuestionFactory(study=a.study, key="years", text="Years?", kind="number", choices=[])
    Participant.objects.filter(pk=a.participant.pk).update(survey_completed_at=None)
    survey = client.post(reverse("annotation:survey", args=[a.study.slug]),
                         {"age_alpha": _payload("survey_answer"), "years": "not a number"})
    assert survey.status_code == 400
    pages["POST survey"] = survey.content.decode()
    Participant.objects.filter(pk=a.participant.pk).update(survey_completed_at=a.participant.survey_completed_at)
    Study.objects.filter(pk=a.study.pk).update(moral_graph_mode=Study.MoralGraphMode.OFF)
    judge = client.post(reverse("annotation:judge", args=[a.study.slug]),
                        {"served_id": str(a.served.pk), "rationale": _payload("rationale")})  # no choice: 422
    assert judge.status_code == 422
    pages["POST judge"] = judge.content.decode()
    pages["GET judge"] = client.get(reverse("annotation:judge", args=[a.study.slug])).content.decode()
    return pages


def test_every_page_shows_planted_text_escaped(world: World) -> None:
    _plant(world)
    pages = {**_pages(world), **_refilled_forms(world)}

    raw = {page: [f for f in FIELDS if _payload(f) in body] for page, body in pages.items()}
    assert {page: fields for page, fields in raw.items() if fields} == {}
    assert all("<script>alert(" not in body for body in pages.values())
    escaped = {f for f in FIELDS for body in pages.values() if html.escape(_payload(f)) in body}
    # The participant attributes appear in exports and the insight analysis, not on an HTML page of this world.
    assert set(FIELDS) - escaped == {"attribute"}
    assert len(pages) > 40


def test_moral_graph_data_in_the_page_cannot_close_its_script_tag(world: World) -> None:
    """json_script escapes <, > and & so a card title cannot end the JSON <script> element."""
    _plant(world)
    url = reverse("moral:context", kwargs={"slug": world.a.study.slug, "context_id": world.a.context.pk})
    body = world.client("owner").get(url).content.decode()
    data = body.split('id="moral-graph-data"', 1)[1].split("</script>", 1)[0]
    assert "<" not in data.split(">", 1)[1]
    assert '\\u003Cscript\\u003Ealert(\\"card_title\\")' in data  # the card is in the graph, escaped
