"""Researcher pages and API of moral-graph mode: access (404 for others' studies, viewers read
only), questions and contexts, seeding and merging cards, stories, aggregation on demand, the
winning values filtered by demographics, legitimacy rates, and the JSON/GraphML exports."""

from __future__ import annotations

import io
import json
import re

import networkx as nx
import pytest
from django.test import Client

from annotation.models import LegitimacyAnswer, UpgradeStory, ValuesCard
from annotation.moral_services import values_card_merge
from elicitation.models import MoralContext, MoralQuestion, Study, StudyCollaborator
from modeling.models import MoralGraphSnapshot
from tests.factories import ParticipantFactory, SurveyQuestionFactory
from tests.moral.conftest import ValuesCardFactory, moral_study, vote_add, voters

pytestmark = pytest.mark.django_db


@pytest.fixture
def logged_in(client: Client, researcher) -> Client:
    client.force_login(researcher)
    return client


def graph_study(owner) -> tuple[Study, MoralContext, list[ValuesCard]]:
    """Honesty → Care → Courage, upgraded by young and old participants alike, except that only the
    old ones also judge Honesty wiser than Courage."""
    study, [context] = moral_study(owner=owner)
    SurveyQuestionFactory(study=study, key="age_group", kind="choice", choices=["young", "old"])
    cards = [ValuesCardFactory(context=context, title=t) for t in ("Honesty", "Care", "Courage")]
    honesty, care, courage = cards
    for group in ("young", "old"):
        for person in voters(study, 3, age_group=group):
            vote_add(participant=person, from_card=honesty, to_card=care, answer="wiser")
            vote_add(participant=person, from_card=care, to_card=courage, answer="wiser")
            if group == "old":
                vote_add(participant=person, from_card=courage, to_card=honesty, answer="wiser")
                vote_add(participant=person, from_card=care, to_card=honesty, answer="wiser")
    return study, context, cards


def test_pages_of_another_researchers_study_are_404(client: Client, researcher, other_researcher) -> None:
    study, [context] = moral_study(owner=researcher)
    client.force_login(other_researcher)
    base = f"/studies/{study.slug}/values/"
    for url in (base, f"{base}contexts/{context.pk}/", f"{base}export.json", f"{base}export.graphml", f"{base}legitimacy/"):
        assert client.get(url).status_code == 404, url
    assert client.post(f"{base}questions/", {"text": "Sneaky?"}).status_code == 404
    assert client.post(f"{base}mode/", {"moral_graph_mode": "off"}).status_code == 404
    assert not MoralQuestion.objects.filter(text="Sneaky?").exists()


def test_viewers_see_the_graph_but_cannot_change_anything(client: Client, researcher, other_researcher) -> None:
    study, [context] = moral_study(owner=researcher)
    StudyCollaborator.objects.create(study=study, user=other_researcher, role=StudyCollaborator.Role.VIEWER)
    client.force_login(other_researcher)
    page = client.get(f"/studies/{study.slug}/values/contexts/{context.pk}/")
    assert page.status_code == 200 and "Merge cards" not in page.text
    response = client.post(f"/studies/{study.slug}/values/contexts/{context.pk}/cards/",
                           {"title": "T", "description": "D", "attention_policies": "THINGS"})
    assert response.status_code == 404 and not ValuesCard.objects.exists()


def test_a_researcher_configures_mode_questions_and_contexts(logged_in: Client, researcher) -> None:
    study, _ = moral_study(owner=researcher, mode=Study.MoralGraphMode.OFF)
    MoralQuestion.objects.all().delete()
    base = f"/studies/{study.slug}/values/"
    logged_in.post(f"{base}mode/", {"moral_graph_mode": "alongside"})
    study.refresh_from_db()
    assert study.moral_graph_mode == "alongside"
    logged_in.post(f"{base}questions/", {"text": "A user asks about a hard choice.", "contexts": "When in distress\n\nWhen rushed"})
    question = MoralQuestion.objects.get(study=study)
    assert list(question.contexts.values_list("text", flat=True)) == ["When in distress", "When rushed"]
    logged_in.post(f"{base}questions/{question.pk}/", {"action": "add_context", "text": "When alone"})
    distress = question.contexts.get(text="When in distress")
    logged_in.post(f"{base}contexts/{distress.pk}/edit/", {"text": "When the user is in distress"})
    distress.refresh_from_db()
    assert distress.text == "When the user is in distress" and question.contexts.count() == 3
    # Bad input: an empty question, a huge context, an unknown mode. Nothing changes.
    page = logged_in.post(f"{base}questions/", {"text": "  "}, follow=True)
    assert "Write the question" in page.text
    page = logged_in.post(f"{base}questions/{question.pk}/", {"action": "add_context", "text": "x" * 600}, follow=True)
    assert "Write the context (at most 500 characters)." in page.text
    logged_in.post(f"{base}mode/", {"moral_graph_mode": "sometimes"})
    study.refresh_from_db()
    assert study.moral_graph_mode == "alongside" and question.contexts.count() == 3


def test_contexts_with_participant_cards_cannot_be_deleted(logged_in: Client, researcher) -> None:
    study, [context] = moral_study(owner=researcher)
    ValuesCardFactory(context=context, participant=ParticipantFactory(study=study))
    page = logged_in.post(f"/studies/{study.slug}/values/contexts/{context.pk}/edit/", {"action": "delete"}, follow=True)
    assert "can no longer be deleted" in page.text and MoralContext.objects.filter(pk=context.pk).exists()


def test_seeding_merging_and_writing_stories(logged_in: Client, researcher) -> None:
    study, [context] = moral_study(owner=researcher)
    base = f"/studies/{study.slug}/values/contexts/{context.pk}/"
    logged_in.post(f"{base}cards/", {"title": "Care", "description": "Caring.", "attention_policies": "needs\nFEARS"})
    logged_in.post(f"{base}cards/", {"title": "Caring", "description": "Care.", "attention_policies": "NEEDS"})
    logged_in.post(f"{base}cards/", {"title": "Rules", "description": "Rules.", "attention_policies": "RULES"})
    bad = logged_in.post(f"{base}cards/", {"title": "", "description": "", "attention_policies": ""}, follow=True)
    assert "Give your value a short title." in bad.text
    care, caring, rules = ValuesCard.objects.order_by("id")
    assert care.attention_policies == ["NEEDS", "FEARS"] and care.interview_backend == "researcher"
    logged_in.post(f"{base}merge/", {"card": caring.pk, "into": care.pk, "action": "merge"})
    logged_in.post(f"{base}merge/", {"card": rules.pk, "into": caring.pk, "action": "merge"})  # into a member
    care.refresh_from_db(), caring.refresh_from_db(), rules.refresh_from_db()
    assert caring.canonical == care and rules.canonical == care  # one level deep
    # Merging a canonical card with members moves its members along.
    other = ValuesCardFactory(context=context, title="Other")
    values_card_merge(card=care, into=other)
    assert set(ValuesCard.objects.filter(canonical=other).values_list("title", flat=True)) == {"Care", "Caring", "Rules"}
    card_page = logged_in.get(f"{base}cards/{other.pk}/", HTTP_HX_REQUEST="true")
    assert "Members" in card_page.text and "Caring" in card_page.text and "<html" not in card_page.text
    logged_in.post(f"{base}merge/", {"card": care.pk, "action": "unmerge"})
    care.refresh_from_db()
    assert care.canonical is None
    logged_in.post(f"{base}stories/", {"from_card": care.pk, "to_card": other.pk, "text": "I learned."})
    same = logged_in.post(f"{base}stories/", {"from_card": care.pk, "to_card": care.pk, "text": "Loop."}, follow=True)
    assert "two different cards" in same.text
    assert list(UpgradeStory.objects.values_list("text", "author_kind")) == [("I learned.", "researcher")]


def test_the_story_written_by_a_researcher_is_the_one_participants_see(client: Client, researcher) -> None:
    from tests.moral.conftest import join

    study, [context] = moral_study(owner=researcher)
    a, b = ValuesCardFactory(context=context, title="Rules"), ValuesCardFactory(context=context, title="Care")
    UpgradeStory.objects.create(context=context, from_card=a, to_card=b, text="Maria stopped quoting rules.",
                                author_kind="researcher")
    UpgradeStory.objects.create(context=context, from_card=a, to_card=b, text="An LLM story.", author_kind="llm")
    participant = join(client, study)
    client.post(f"/s/{study.slug}/values/")
    card = ValuesCard.objects.get(participant=participant)
    client.post(f"/s/{study.slug}/values/interview/{card.pk}/", {"answer_0": "x", "answer_1": "", "answer_2": ""})
    client.post(f"/s/{study.slug}/values/card/{card.pk}/", {
        "title": "Punctuality", "description": "Being on time.", "attention_policies": "CLOCKS", "confirm": "yes"})
    page = client.get(f"/s/{study.slug}/values/vote/")
    # Edges away from the participant's own card come first; a → b is the one with a story.
    edge = page.context["edge"]
    if (edge.from_card, edge.to_card) == (a, b):
        assert "Maria stopped quoting rules." in page.text
    else:
        assert (edge.from_card, edge.to_card) == (b, a) and "Someone used to handle situations" in page.text


def test_aggregate_now_and_the_graph_page(logged_in: Client, researcher, django_assert_max_num_queries) -> None:
    study, context, (honesty, care, courage) = graph_study(researcher)
    base = f"/studies/{study.slug}/values/"
    before = logged_in.get(f"{base}contexts/{context.pk}/")
    assert "Not aggregated yet" in before.text
    logged_in.post(f"{base}aggregate/", {"context": context.pk})
    snapshot = MoralGraphSnapshot.objects.get(context=context)
    assert [n["title"] for n in snapshot.nodes][0] == "Care" or snapshot.nodes  # scores stored
    with django_assert_max_num_queries(12):
        page = logged_in.get(f"{base}contexts/{context.pk}/")
    data = page.context["graph"]
    assert {n["id"] for n in data["nodes"]} == {honesty.pk, care.pk, courage.pk}
    assert any(e["from"] == honesty.pk and e["to"] == care.pk and e["kept"] for e in data["edges"])
    assert 'id="moral-graph-data"' in page.text and "moral_graph.js" in page.text


def test_winning_values_filtered_by_demographic_group(logged_in: Client, researcher, django_assert_max_num_queries) -> None:
    study, context, _ = graph_study(researcher)
    url = f"/studies/{study.slug}/values/"
    with django_assert_max_num_queries(16):
        page = logged_in.get(url)
    assert page.status_code == 200
    young = logged_in.get(url + "?group=age_group%3Dyoung", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="winners")
    old = logged_in.get(url + "?group=age_group%3Dold", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="winners")
    assert "<html" not in young.text and 'id="winners"' not in young.text  # the fragment only

    def ranked(fragment: str) -> list[str]:
        return re.findall(r'class="winner-title">([^<]+)<', fragment)

    assert ranked(young.text) == ["Courage", "Care", "Honesty"]  # the end of the young voters' chain
    assert ranked(old.text)[0] == "Honesty"  # old voters upgrade Care and Courage to Honesty
    unknown = logged_in.get(url + "?group=age_group%3Dancient")  # not an option: all participants
    assert unknown.status_code == 200 and unknown.context["group"] == "age_group=ancient"


def test_legitimacy_rates(logged_in: Client, researcher) -> None:
    study, _ = moral_study(owner=researcher)
    for represented, fair in [("yes", "yes"), ("yes", "no"), ("no", "yes"), ("unsure", "yes")]:
        LegitimacyAnswer.objects.create(participant=ParticipantFactory(study=study), values_represented=represented,
                                        process_fair=fair)
    page = logged_in.get(f"/studies/{study.slug}/values/legitimacy/", HTTP_HX_REQUEST="true")
    assert "50.0%" in page.text and "75.0%" in page.text and "2 of 4 said yes" in page.text


def test_the_json_and_graphml_exports_parse_and_agree(logged_in: Client, researcher, api_client) -> None:
    study, context, (honesty, care, courage) = graph_study(researcher)
    member = ValuesCardFactory(context=context, title="Caring", canonical=care,
                               participant=ParticipantFactory(study=study, external_id="PID-secret",
                                                              attributes={"age_group": "old"}))
    response = logged_in.get(f"/studies/{study.slug}/values/export.json")
    assert response["Content-Disposition"].endswith('-moral-graph.json"')
    data = json.loads(response.content)
    assert [c["text"] for c in data["contexts"]] == [context.text]
    assert {c["id"]: c["members"] for c in data["canonical_cards"]}[care.pk] == [member.pk]
    edge = next(e for e in data["edges"] if (e["from"], e["to"]) == (honesty.pk, care.pk))
    assert edge["counts"]["wiser"] == 6 and edge["likelihood"] == 1.0 and edge["kept"]
    assert set(data["scores"][str(context.pk)]) == {str(honesty.pk), str(care.pk), str(courage.pk)}
    assert "PID-secret" not in response.content.decode()
    pseudonym = next(c["participant"] for c in data["cards"] if c["id"] == member.pk)
    assert {"id": pseudonym, "attributes": {"age_group": "old"}} in data["participants"]
    graphml = logged_in.get(f"/studies/{study.slug}/values/export.graphml")
    graph = nx.read_graphml(io.BytesIO(graphml.content))
    assert graph.number_of_nodes() == 3 and graph.has_edge(f"card-{honesty.pk}", f"card-{care.pk}")
    assert graph.nodes[f"card-{care.pk}"]["members"] == str(member.pk)
    assert graph.edges[f"card-{honesty.pk}", f"card-{care.pk}"]["n_wiser"] == 6
    # The API serves the same.
    api = api_client.get(f"/api/v1/studies/{study.slug}/moral-graph")
    assert api.status_code == 200 and api.json()["edges"] == data["edges"]
    api_graphml = api_client.get(f"/api/v1/studies/{study.slug}/moral-graph.graphml")
    assert api_graphml.status_code == 200 and nx.read_graphml(io.BytesIO(api_graphml.content)).number_of_nodes() == 3


def test_the_api_hides_other_researchers_studies(api_client, other_researcher) -> None:
    study, _ = moral_study(owner=other_researcher)
    assert api_client.get(f"/api/v1/studies/{study.slug}/moral-graph").status_code == 404
    assert api_client.get(f"/api/v1/studies/{study.slug}/moral-graph.graphml").status_code == 404
