"""The values pages with the Django test client against the real database: the guided interview,
editing and confirming a card, deduplication, votes, the legitimacy questions and the completion
code, and the bad input around them (empty and huge cards, HTML, votes on hidden contexts)."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client

from annotation.models import LegitimacyAnswer, Participant, UpgradeStory, ValuesCard, WiserVote, Withdrawal
from annotation.moral_selectors import moral_edge_get_for_vote, moral_edge_next, moral_step_url
from elicitation.models import Study
from tests.factories import ParticipantFactory, study_with_pool
from tests.moral.conftest import (
    MoralContextFactory,
    MoralQuestionFactory,
    ValuesCardFactory,
    join,
    moral_study,
    vote_add,
)

pytestmark = pytest.mark.django_db
CODE = "C0MPL3TE"  # StudyFactory's completion code
CARD = {
    "title": "Careful listening",
    "description": "Helping someone feel heard before offering advice.",
    "attention_policies": "feelings the person has not yet put into words\nMOMENTS when advice would cut them short",
    "confirm": "yes",
}


def values_url(study: Study, step: str = "") -> str:
    return f"/s/{study.slug}/values/{step + '/' if step else ''}"


def start(client: Client, study: Study, pid: str = "PID-1") -> tuple[Participant, ValuesCard]:
    participant = join(client, study, pid)
    response = client.post(values_url(study))
    card = ValuesCard.objects.get(participant=participant)
    assert response.status_code == 302 and response.url == values_url(study, f"interview/{card.pk}")
    return participant, card


def interview(client: Client, study: Study, card: ValuesCard) -> None:
    response = client.post(values_url(study, f"interview/{card.pk}"), {
        "answer_0": "That the person feels heard. Advice can wait.",
        "answer_1": "My aunt listened first.",
        "answer_2": "",
    })
    assert response.status_code == 302 and response.url == values_url(study, f"card/{card.pk}")


def test_consent_in_only_mode_leads_to_the_values_start_page(client: Client) -> None:
    study, _ = moral_study()
    join(client, study)
    response = client.get(f"/s/{study.slug}/")
    # Which page the pairwise flow hands over to is annotation.views' business; the selector says where.
    participant = Participant.objects.get()
    assert moral_step_url(participant=participant, step="instructions") == values_url(study)
    page = client.get(values_url(study))
    assert page.status_code == 200 and "What matters to you" in page.text
    assert response.status_code == 302


def test_guided_interview_drafts_a_card_the_participant_edits_and_confirms(client: Client) -> None:
    study, [context] = moral_study()
    participant, card = start(client, study)
    page = client.get(values_url(study, f"interview/{card.pk}"))
    assert context.text in page.text and "What should a good response attend to?" in page.text
    interview(client, study, card)
    card.refresh_from_db()
    assert card.status == ValuesCard.Status.DRAFT
    assert card.description == "That the person feels heard."  # drafted from the first answer
    assert [t["role"] for t in card.transcript] == ["assistant", "user"] * 3
    edit = client.get(values_url(study, f"card/{card.pk}"))
    assert "My aunt listened first." in edit.text  # their answers are shown next to the card
    response = client.post(values_url(study, f"card/{card.pk}"), CARD)
    card.refresh_from_db()
    assert card.status == ValuesCard.Status.CONFIRMED and card.canonical_id is None
    assert card.attention_policies == [
        "FEELINGS the person has not yet put into words", "MOMENTS when advice would cut them short",
    ]
    # No other card in the context: nothing to vote on, so the legitimacy questions come next.
    assert response.url == values_url(study, "legitimacy")


def test_the_first_answer_is_required_and_nothing_is_stored_without_it(client: Client) -> None:
    study, _ = moral_study()
    _, card = start(client, study)
    response = client.post(values_url(study, f"interview/{card.pk}"), {"answer_0": "  ", "answer_1": "x", "answer_2": ""})
    assert response.status_code == 422 and "Please write an answer." in response.text
    card.refresh_from_db()
    assert card.status == ValuesCard.Status.INTERVIEW and card.transcript == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("title", "", "Give your value a short title."),
        ("title", "x" * 121, "Keep the title under 120 characters (it has 121)."),
        ("description", "", "Describe the value in one sentence."),
        ("description", "y" * 1000, "it has 1000"),
        ("description", "y" * 100_000, "far too long (100000 characters)"),
        ("attention_policies", "\n  \n", "Write at least one thing"),
        ("attention_policies", "\n".join(f"THINGS {i}" for i in range(11)), "at most 10 attention policies"),
        ("attention_policies", "THINGS " + "z" * 300, "under 200 characters"),
    ],
)
def test_empty_or_huge_cards_are_refused_with_nothing_written(client: Client, field: str, value: str, message: str) -> None:
    study, _ = moral_study()
    _, card = start(client, study)
    interview(client, study, card)
    response = client.post(values_url(study, f"card/{card.pk}"), {**CARD, field: value})
    assert response.status_code == 422 and message in response.text
    card.refresh_from_db()
    assert card.status == ValuesCard.Status.DRAFT and card.title == ""


def test_a_card_must_be_confirmed_as_capturing_the_value(client: Client) -> None:
    study, _ = moral_study()
    _, card = start(client, study)
    interview(client, study, card)
    response = client.post(values_url(study, f"card/{card.pk}"), {**CARD, "confirm": ""})
    assert response.status_code == 422 and "Tick the box" in response.text
    card.refresh_from_db()
    assert card.status == ValuesCard.Status.DRAFT


def test_html_in_a_card_is_escaped_on_every_page_that_shows_it(client: Client, researcher) -> None:
    study, [context] = moral_study(owner=researcher)
    ValuesCardFactory(context=context, title="Rules first")
    _, card = start(client, study)
    interview(client, study, card)
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    client.post(values_url(study, f"card/{card.pk}"), {**CARD, "title": evil, "description": evil})
    card.refresh_from_db()
    assert card.title == evil  # stored as written, escaped when shown
    vote_page = client.get(values_url(study, "vote"))
    assert vote_page.status_code == 200
    assert "<script>alert" not in vote_page.text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in vote_page.text
    client.force_login(researcher)
    for url in (f"/studies/{study.slug}/values/contexts/{context.pk}/", f"/studies/{study.slug}/values/",
                f"/studies/{study.slug}/values/contexts/{context.pk}/cards/{card.pk}/"):
        page = client.get(url)
        assert page.status_code == 200 and "<script>alert" not in page.text and "<img src=x" not in page.text, url
    graph_page = client.get(f"/studies/{study.slug}/values/contexts/{context.pk}/")
    assert "\\u003Cscript\\u003E" in graph_page.text  # json_script escapes it inside the graph data


def test_votes_then_legitimacy_then_the_completion_code(client: Client) -> None:
    study, [context] = moral_study()
    seeded = [ValuesCardFactory(context=context, title=t) for t in ("Rules first", "Care first")]
    participant, card = start(client, study)
    interview(client, study, card)
    client.post(values_url(study, f"card/{card.pk}"), {**CARD, "title": "Patience", "description": "Waiting."})
    voted = 0
    while True:
        page = client.get(values_url(study, "vote"))
        if page.status_code == 302:
            assert page.url == values_url(study, "legitimacy")
            break
        edge = page.context["edge"]
        assert edge.context == context and edge.from_card != edge.to_card
        assert CODE not in page.text
        response = client.post(values_url(study, "vote"), {
            "context_id": context.pk, "from_card": edge.from_card.pk, "to_card": edge.to_card.pk,
            "submission_id": page.context["submission_id"], "answer": "wiser", "reason": "It is kinder.",
        })
        assert response.status_code == 302
        voted += 1
    # Three cards: three pairs, one question per pair (the setting asks for up to 5 votes).
    assert voted == 3 == WiserVote.objects.filter(participant=participant).count()
    assert {frozenset((v.from_card_id, v.to_card_id)) for v in WiserVote.objects.all()} == {
        frozenset((seeded[0].pk, seeded[1].pk)), frozenset((seeded[0].pk, card.pk)),
        frozenset((seeded[1].pk, card.pk)),
    }
    assert client.get(values_url(study, "done")).url == values_url(study, "legitimacy")
    missing = client.post(values_url(study, "legitimacy"), {"values_represented": "yes"})
    assert missing.status_code == 422 and "Please answer this question." in missing.text
    participant.refresh_from_db()
    assert participant.completed_at is None
    done = client.post(values_url(study, "legitimacy"), {"values_represented": "yes", "process_fair": "no"})
    assert done.url == values_url(study, "done")
    page = client.get(done.url)
    assert CODE in page.text
    participant.refresh_from_db()
    assert participant.completed_at is not None
    assert LegitimacyAnswer.objects.get().process_fair == "no"


def test_a_repeated_vote_submission_stores_one_vote(client: Client) -> None:
    study, [context] = moral_study()
    a, b = ValuesCardFactory(context=context), ValuesCardFactory(context=context)
    _, card = start(client, study)
    interview(client, study, card)
    client.post(values_url(study, f"card/{card.pk}"), CARD)
    data = {"context_id": context.pk, "from_card": a.pk, "to_card": b.pk, "submission_id": str(uuid.uuid4()),
            "answer": "equal", "reason": ""}
    first = client.post(values_url(study, "vote"), data)
    second = client.post(values_url(study, "vote"), data, HTTP_HX_REQUEST="true")
    assert first.status_code == 302 and second.status_code == 200
    assert "That answer was already recorded." in second.text and "<html" not in second.text  # the fragment
    assert WiserVote.objects.count() == 1
    # The same edge with a fresh submission id is this participant's vote again: still one.
    client.post(values_url(study, "vote"), {**data, "submission_id": str(uuid.uuid4()), "answer": "wiser"})
    assert WiserVote.objects.get().answer == "equal"


def test_a_vote_on_a_context_the_participant_may_not_see_is_a_404(client: Client) -> None:
    study, [mine, other] = moral_study(contexts=2)
    hidden = [ValuesCardFactory(context=other), ValuesCardFactory(context=other)]
    ValuesCardFactory(context=mine)
    participant = join(client, study)
    client.post(values_url(study))
    card = ValuesCard.objects.get(participant=participant)
    visible, invisible = (mine, other) if card.context == mine else (other, mine)
    if invisible != other:  # assignment is random among equally covered contexts; keep the test's shape
        hidden = [ValuesCardFactory(context=invisible), ValuesCardFactory(context=invisible)]
    interview(client, study, card)
    client.post(values_url(study, f"card/{card.pk}"), CARD)
    data = {"from_card": hidden[0].pk, "to_card": hidden[1].pk, "submission_id": str(uuid.uuid4()), "answer": "wiser"}
    assert client.post(values_url(study, "vote"), {**data, "context_id": invisible.pk}).status_code == 404
    # Cards of the hidden context named under the participant's own context: also not found.
    assert client.post(values_url(study, "vote"), {**data, "context_id": visible.pk}).status_code == 404
    malformed = client.post(values_url(study, "vote"), {**data, "context_id": "x", "submission_id": "nope"})
    assert malformed.status_code == 400 and "This answer was malformed" in malformed.text
    assert not WiserVote.objects.exists()


def test_another_participants_card_is_a_404(client: Client) -> None:
    study, _ = moral_study()
    _, card = start(client, study, "PID-1")
    other = Client()
    join(other, study, "PID-2")
    other.post(values_url(study))
    assert other.get(values_url(study, f"interview/{card.pk}")).status_code == 404
    assert other.post(values_url(study, f"card/{card.pk}"), CARD).status_code == 404


def test_withdrawing_deletes_the_participants_cards_and_votes(client: Client) -> None:
    study, [context] = moral_study()
    a, b = ValuesCardFactory(context=context), ValuesCardFactory(context=context)
    _, card = start(client, study)
    interview(client, study, card)
    client.post(values_url(study, f"card/{card.pk}"), CARD)
    page = client.get(values_url(study, "vote"))
    client.post(values_url(study, "vote"), {
        "context_id": context.pk, "from_card": page.context["edge"].from_card.pk,
        "to_card": page.context["edge"].to_card.pk, "submission_id": page.context["submission_id"], "answer": "wiser",
    })
    client.post(f"/s/{study.slug}/withdraw/", {"confirm": "yes"})
    assert Withdrawal.objects.count() == 1
    assert list(ValuesCard.objects.order_by("id")) == [a, b] and not WiserVote.objects.exists()


def test_alongside_mode_asks_for_values_before_judging_and_the_code_after(client: Client) -> None:
    study = study_with_pool(judgments_per_participant=2, moral_graph_mode=Study.MoralGraphMode.ALONGSIDE)
    MoralContextFactory(question=MoralQuestionFactory(study=study))
    participant = join(client, study)
    assert moral_step_url(participant=participant, step="instructions") is None
    assert moral_step_url(participant=participant, step="judge") == values_url(study)
    assert moral_step_url(participant=participant, step="done") == values_url(study)
    # The values start page sends them through the instructions of the pairwise part first.
    assert client.get(values_url(study)).url == f"/s/{study.slug}/instructions/"
    client.post(f"/s/{study.slug}/instructions/")
    participant.refresh_from_db()
    client.post(values_url(study))
    card = ValuesCard.objects.get(participant=participant)
    interview(client, study, card)
    client.post(values_url(study, f"card/{card.pk}"), CARD)
    done = client.post(values_url(study, "legitimacy"), {"values_represented": "yes", "process_fair": "yes"})
    assert done.url == f"/s/{study.slug}/judge/"
    participant.refresh_from_db()
    assert participant.completed_at is None  # the pairwise judgments complete the participant
    assert moral_step_url(participant=participant, step="judge") is None


def test_a_closed_study_accepts_no_values(client: Client) -> None:
    study, _ = moral_study()
    _, card = start(client, study)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.CLOSED)
    response = client.post(values_url(study, f"interview/{card.pk}"), {"answer_0": "x", "answer_1": "", "answer_2": ""})
    assert response.status_code == 403
    card.refresh_from_db()
    assert card.status == ValuesCard.Status.INTERVIEW


def test_a_study_without_moral_graph_mode_has_no_values_pages(client: Client) -> None:
    study = study_with_pool()
    join(client, study)
    assert client.get(values_url(study)).url == f"/s/{study.slug}/"


def test_a_participant_may_retell_the_story_for_the_next_voters(client: Client) -> None:
    study, [context] = moral_study()
    a, b = ValuesCardFactory(context=context, title="Rules"), ValuesCardFactory(context=context, title="Care")
    _, card = start(client, study)
    interview(client, study, card)
    client.post(values_url(study, f"card/{card.pk}"), CARD)
    data = {"context_id": context.pk, "from_card": a.pk, "to_card": b.pk, "submission_id": str(uuid.uuid4()),
            "answer": "wiser"}
    too_long = client.post(values_url(study, "vote"), {**data, "better_story": "s" * 1600})
    assert too_long.status_code == 422 and "it has 1600" in too_long.text and not WiserVote.objects.exists()
    client.post(values_url(study, "vote"), {**data, "better_story": "Ana followed the rules until her father fell ill."})
    story = UpgradeStory.objects.get()
    assert (story.from_card, story.to_card, story.author_kind) == (a, b, "participant")
    other = Client()
    join(other, study, "PID-2")
    other.post(values_url(study))
    other_card = ValuesCard.objects.get(participant__external_id="PID-2")
    interview(other, study, other_card)
    other.post(values_url(study, f"card/{other_card.pk}"), {**CARD, "title": "Punctuality", "description": "On time.",
                                                           "attention_policies": "CLOCKS"})
    edge = moral_edge_get_for_vote(participant=other_card.participant, context_id=context.pk,
                                   from_card_id=a.pk, to_card_id=b.pk)
    assert edge.story == story and edge.story_text == story.text


def test_edges_below_the_vote_target_are_served_first(settings) -> None:
    settings.POLYPHONY_MORAL_VOTES_PER_EDGE = 2
    study, [context] = moral_study()
    a, b, c = (ValuesCardFactory(context=context, title=t) for t in "ABC")
    voter = ParticipantFactory(study=study)
    own = ValuesCardFactory(context=context, participant=voter, title="Mine")
    others = [ParticipantFactory(study=study) for _ in range(2)]
    # a→b and b→a, a→c and c→a already have their two votes; b↔c has none.
    for person in others:
        for x, y in ((a, b), (b, a), (a, c), (c, a)):
            vote_add(participant=person, from_card=x, to_card=y, answer="wiser")
    edge = moral_edge_next(participant=voter)
    assert {edge.from_card, edge.to_card} == {b, c}
    vote_add(participant=voter, from_card=edge.from_card, to_card=edge.to_card, answer="equal")
    # Then the covered pairs (still not touching their own card), and the edges with their own card last.
    served = []
    while (edge := moral_edge_next(participant=voter)) is not None:
        served.append(frozenset((edge.from_card.pk, edge.to_card.pk)))
        vote_add(participant=voter, from_card=edge.from_card, to_card=edge.to_card, answer="unsure")
    assert set(served[:2]) == {frozenset((a.pk, b.pk)), frozenset((a.pk, c.pk))}
    assert all(own.pk in pair for pair in served[2:]) and len(served) == 5
