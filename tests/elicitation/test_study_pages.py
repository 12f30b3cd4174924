"""Researcher pages: study list, create/edit, survey, attention checks, status; who may see what."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotation.models import Judgment, Participant, SurveyAnswer
from elicitation.models import Pair, Prompt, Response, Study, StudyCollaborator, SurveyQuestion
from tests.factories import (
    ParticipantFactory,
    PromptFactory,
    ResponseFactory,
    StudyFactory,
    SurveyQuestionFactory,
    UserFactory,
    pair_create,
    study_with_pool,
)

pytestmark = pytest.mark.django_db

VALID_STUDY = {
    "title": "Helpfulness of travel advice",
    "slug": "travel-advice",
    "description": "Which answer helps more?",
    "consent_text": "You agree to take part.",
    "instructions": "Pick the more helpful response.",
    "judgments_per_participant": "12",
    "overlap_target": "3",
    "allow_ties": "on",
    "strength_labels": "slightly, clearly, much",
    "rationale_mode": "optional",
    "completion_code": "",
    "redirect_url": "https://app.prolific.com/submissions/complete?cc=XYZ",
    "selection_policy": "random",
}


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def client_r(researcher) -> Client:
    return _client_for(researcher)


@pytest.fixture
def study(researcher) -> Study:
    return study_with_pool(prompts=2, responses_per_prompt=3, owner=researcher, slug="mine", title="My study",
                           status=Study.Status.DRAFT)


# --- study list ----------------------------------------------------------------------------------


def test_anonymous_visitor_is_sent_to_login() -> None:
    response = Client().get(reverse("elicitation:study_list"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_study_list_shows_own_and_shared_studies_with_counts(
    client_r, researcher, other_researcher, django_assert_max_num_queries
) -> None:
    own = study_with_pool(prompts=1, responses_per_prompt=3, owner=researcher, title="Own study")
    participant = ParticipantFactory(study=own)
    pair = own.pairs.first()
    for _ in range(2):
        _judgment(participant=participant, pair=pair)
    shared = StudyFactory(owner=other_researcher, title="Shared with me")
    StudyCollaborator.objects.create(study=shared, user=researcher, role=StudyCollaborator.Role.VIEWER)
    # A second collaborator must not double the counts through the join.
    StudyCollaborator.objects.create(study=own, user=UserFactory(), role=StudyCollaborator.Role.EDITOR)
    StudyFactory(owner=other_researcher, title="Not mine")

    with django_assert_max_num_queries(4):  # session user, studies (with counts), messages
        response = client_r.get(reverse("elicitation:study_list"))

    body = response.content.decode()
    assert "Own study" in body and "Shared with me" in body
    assert "Not mine" not in body
    row = {s.title: s for s in response.context["studies"]}
    assert (row["Own study"].judgment_total, row["Own study"].participant_total, row["Own study"].pair_total) == (2, 1, 3)
    assert row["Shared with me"].judgment_total == 0
    assert 'class="badge open"' in body


def test_superuser_sees_every_study(other_researcher) -> None:
    StudyFactory(owner=other_researcher, title="Somebody else's")
    admin = UserFactory(username="admin", is_superuser=True, is_staff=True)
    response = _client_for(admin).get(reverse("elicitation:study_list"))
    assert "Somebody else&#x27;s" in response.content.decode()


# --- create and edit -----------------------------------------------------------------------------


def test_create_study_makes_a_draft_with_parsed_scale_and_generated_code(client_r, researcher) -> None:
    response = client_r.post(reverse("elicitation:study_create"), VALID_STUDY)

    assert response.status_code == 302
    study = Study.objects.get(slug="travel-advice")
    assert response["Location"] == reverse("monitor:study_detail", args=[study.slug])
    assert study.owner == researcher
    assert study.status == Study.Status.DRAFT
    assert study.strength_labels == ["slightly", "clearly", "much"]
    assert study.judgments_per_participant == 12
    assert len(study.completion_code) == 8


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"slug": "Not a slug!"}, "slug", "Enter a valid"),
        ({"slug": "new"}, "slug", "reserved"),
        ({"title": ""}, "title", "required"),
        ({"strength_labels": "only-one"}, "strength_labels", "at least two labels"),
        ({"strength_labels": "same, Same"}, "strength_labels", "must all differ"),
        ({"judgments_per_participant": "0"}, "judgments_per_participant", "greater than or equal to 1"),
        ({"redirect_url": "not a url"}, "redirect_url", "valid URL"),
        ({"rationale_mode": "sometimes"}, "rationale_mode", "valid choice"),
    ],
)
def test_create_study_with_bad_input_shows_the_error_and_writes_nothing(client_r, change, field, message) -> None:
    response = client_r.post(reverse("elicitation:study_create"), {**VALID_STUDY, **change})

    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors[field])
    assert Study.objects.count() == 0


def test_create_study_with_a_taken_slug_is_refused(client_r, other_researcher) -> None:
    StudyFactory(owner=other_researcher, slug="travel-advice")
    response = client_r.post(reverse("elicitation:study_create"), VALID_STUDY)
    assert "already exists" in " ".join(response.context["form"].errors["slug"])
    assert Study.objects.count() == 1


def test_edit_study_saves_changes(client_r, study) -> None:
    url = reverse("elicitation:study_edit", args=[study.slug])
    page = client_r.get(url)
    assert 'value="slightly, clearly, much"' in page.content.decode()

    response = client_r.post(url, {**VALID_STUDY, "slug": "renamed", "strength_labels": "a bit, a lot",
                                   "allow_ties": ""})

    assert response.status_code == 302
    study.refresh_from_db()
    assert (study.slug, study.title, study.allow_ties) == ("renamed", VALID_STUDY["title"], False)
    assert study.strength_labels == ["a bit", "a lot"]
    assert len(study.completion_code) == 8  # blanked: a new one is generated


def test_slug_cannot_change_once_the_study_has_been_opened(client_r, study) -> None:
    study.status = Study.Status.OPEN
    study.save()
    response = client_r.post(reverse("elicitation:study_edit", args=[study.slug]), {**VALID_STUDY, "slug": "other"})
    # The field is disabled on the page, so the submitted slug is ignored and the rest is saved.
    assert response.status_code == 302
    study.refresh_from_db()
    assert study.slug == "mine"
    assert study.title == VALID_STUDY["title"]


def test_strength_scale_length_is_fixed_once_strengths_are_stored(client_r, study) -> None:
    participant = ParticipantFactory(study=study)
    _judgment(participant=participant, pair=study.pairs.first(), strength=3)
    url = reverse("elicitation:study_edit", args=[study.slug])

    response = client_r.post(url, {**VALID_STUDY, "slug": "mine", "strength_labels": "a bit, a lot",
                                   "title": "Changed"})

    assert response.status_code == 200
    assert "rename its labels" in " ".join(response.context["form"].errors["strength_labels"])
    study.refresh_from_db()
    assert study.title == "My study"  # nothing saved
    relabel = client_r.post(url, {**VALID_STUDY, "slug": "mine", "strength_labels": "a bit, quite, a lot"})
    assert relabel.status_code == 302


# --- survey --------------------------------------------------------------------------------------


def _survey_post(rows: list[dict[str, str]], initial: int = 0) -> dict[str, str]:
    data = {
        "questions-TOTAL_FORMS": str(len(rows)), "questions-INITIAL_FORMS": str(initial),
        "questions-MIN_NUM_FORMS": "0", "questions-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(rows):
        for name, value in row.items():
            data[f"questions-{index}-{name}"] = value
    return data


def test_survey_formset_saves_every_kind_of_question(client_r, study) -> None:
    url = reverse("elicitation:study_survey", args=[study.slug])
    assert client_r.get(url).status_code == 200
    rows = [
        {"key": "age_group", "text": "Your age group?", "kind": "choice", "choices": "18-34\r\n35-54\r\n55+",
         "required": "on", "position": "1"},
        {"key": "languages", "text": "Languages you read?", "kind": "multi_choice", "choices": "English\nGerman",
         "position": "2"},
        {"key": "years", "text": "Years of education", "kind": "number", "min_value": "0", "max_value": "30",
         "required": "on", "position": "3"},
        {"key": "comment", "text": "Anything else?", "kind": "text", "choices": "stray option", "position": "4"},
    ]

    response = client_r.post(url, _survey_post(rows))

    assert response.status_code == 302
    questions = list(study.survey_questions.all())
    assert [q.key for q in questions] == ["age_group", "languages", "years", "comment"]
    assert questions[0].choices == ["18-34", "35-54", "55+"]
    assert questions[1].required is False
    assert (questions[2].min_value, questions[2].max_value) == (0, 30)
    assert questions[3].choices == []  # options of a non-choice question are dropped


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"key": "q", "text": "Pick", "kind": "choice", "choices": "only one"}, "at least two different choices"),
        ({"key": "q", "text": "Pick", "kind": "multi_choice", "choices": "a\na"}, "at least two different choices"),
        ({"key": "q", "text": "How many?", "kind": "number", "min_value": "5", "max_value": "1"}, "maximum"),
        ({"key": "bad key", "text": "Hm", "kind": "text"}, "valid"),
        ({"key": "q", "text": "", "kind": "text"}, "required"),
    ],
)
def test_survey_formset_rejects_bad_questions_and_writes_nothing(client_r, study, row, message) -> None:
    url = reverse("elicitation:study_survey", args=[study.slug])
    good = {"key": "ok", "text": "Fine?", "kind": "text"}

    response = client_r.post(url, _survey_post([good, row]))

    assert response.status_code == 200
    assert message in str(response.context["formset"].errors)
    assert SurveyQuestion.objects.count() == 0


def test_survey_duplicate_keys_are_refused(client_r, study) -> None:
    url = reverse("elicitation:study_survey", args=[study.slug])
    rows = [{"key": "age", "text": "Age?", "kind": "number"}, {"key": "age", "text": "Again?", "kind": "text"}]
    response = client_r.post(url, _survey_post(rows))
    assert response.status_code == 200
    assert "Please correct the duplicate data for key" in str(response.context["formset"].non_form_errors())
    assert SurveyQuestion.objects.count() == 0


def test_survey_edit_updates_renames_and_deletes_questions(client_r, study) -> None:
    keep = SurveyQuestionFactory(study=study, key="age", kind="number", choices=[], position=1)
    drop = SurveyQuestionFactory(study=study, key="drop", position=2)
    url = reverse("elicitation:study_survey", args=[study.slug])
    rows = [
        {"id": str(keep.pk), "study": str(study.pk), "key": "age_years", "text": "Age in years?", "kind": "number",
         "position": "1"},
        {"id": str(drop.pk), "study": str(study.pk), "key": "drop", "text": drop.text, "kind": "choice",
         "choices": "yes\nno", "position": "2", "DELETE": "on"},
        {"key": "", "text": "", "kind": "", "position": ""},  # the empty "new question" block
    ]

    response = client_r.post(url, _survey_post(rows, initial=2))

    assert response.status_code == 302, response.context["formset"].errors
    assert [(q.pk, q.key, q.text) for q in study.survey_questions.all()] == [(keep.pk, "age_years", "Age in years?")]


def test_survey_keys_can_be_swapped_between_two_questions(client_r, study) -> None:
    first = SurveyQuestionFactory(study=study, key="a", text="First?", kind="text", choices=[], position=1)
    second = SurveyQuestionFactory(study=study, key="b", text="Second?", kind="text", choices=[], position=2)
    rows = [
        {"id": str(first.pk), "study": str(study.pk), "key": "b", "text": "First?", "kind": "text", "position": "1"},
        {"id": str(second.pk), "study": str(study.pk), "key": "a", "text": "Second?", "kind": "text", "position": "2"},
    ]

    response = client_r.post(reverse("elicitation:study_survey", args=[study.slug]), _survey_post(rows, initial=2))

    assert response.status_code == 302, response.context["formset"].errors
    assert [(q.pk, q.key) for q in study.survey_questions.all()] == [(first.pk, "b"), (second.pk, "a")]


def test_answered_survey_question_cannot_be_removed(client_r, study) -> None:
    question = SurveyQuestionFactory(study=study, key="age_group", position=1)
    participant = ParticipantFactory(study=study)
    SurveyAnswer.objects.create(participant=participant, question=question, value="yes")
    rows = [{"id": str(question.pk), "study": str(study.pk), "key": "age_group", "text": question.text,
             "kind": "choice", "choices": "yes\nno", "position": "1", "DELETE": "on"}]

    response = client_r.post(reverse("elicitation:study_survey", args=[study.slug]), _survey_post(rows, initial=1))

    assert response.status_code == 200
    assert "participants have answered it" in response.content.decode()
    assert SurveyQuestion.objects.filter(pk=question.pk).exists()


# --- attention checks ----------------------------------------------------------------------------


def test_attention_check_is_added_as_a_marked_pair_once(client_r, study) -> None:
    url = reverse("elicitation:attention_checks", args=[study.slug])
    data = {"prompt_text": "What is 2 + 2?", "correct_text": "4.", "wrong_text": "Bananas are yellow."}

    assert client_r.post(url, data).status_code == 302
    assert client_r.post(url, data).status_code == 302  # the same check again: found by content hash

    pair = Pair.objects.get(study=study, is_attention_check=True)
    assert pair.origin == Pair.Origin.RESEARCHER
    assert pair.correct_response.text == "4."
    assert pair.response_a_id < pair.response_b_id
    assert Prompt.objects.filter(study=study, text="What is 2 + 2?").count() == 1
    page = client_r.get(url).content.decode()
    assert "Bananas are yellow." in page and "Attention check" in page


def test_attention_check_marks_an_existing_pool_pair(client_r, study) -> None:
    pair = study.pairs.select_related("prompt", "response_a", "response_b").first()
    data = {"prompt_text": pair.prompt.text, "correct_text": pair.response_b.text, "wrong_text": pair.response_a.text}
    client_r.post(reverse("elicitation:attention_checks", args=[study.slug]), data)
    pair.refresh_from_db()
    assert pair.is_attention_check and pair.correct_response_id == pair.response_b_id
    assert Response.objects.filter(prompt=pair.prompt).count() == 3  # no duplicates


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"prompt_text": "Q?", "correct_text": "Same", "wrong_text": "Same"}, "wrong_text"),
        ({"prompt_text": "  ", "correct_text": "A", "wrong_text": "B"}, "prompt_text"),
    ],
)
def test_bad_attention_check_is_refused(client_r, study, data, field) -> None:
    response = client_r.post(reverse("elicitation:attention_checks", args=[study.slug]), data)
    assert response.status_code == 200
    assert response.context["form"].errors[field]
    assert not Pair.objects.filter(is_attention_check=True).exists()
    assert not Prompt.objects.filter(text="Q?").exists()


def test_removing_an_unused_attention_check_deletes_it_and_a_used_one_is_unmarked(client_r, study) -> None:
    prompt = PromptFactory(study=study)
    good, bad = ResponseFactory(prompt=prompt), ResponseFactory(prompt=prompt)
    unused = pair_create(prompt=prompt, first=good, second=bad, is_attention_check=True, correct_response=good,
                         origin=Pair.Origin.RESEARCHER)
    pool_pair = study.pairs.exclude(pk=unused.pk).first()
    Pair.objects.filter(pk=pool_pair.pk).update(is_attention_check=True, correct_response=pool_pair.response_a)

    for pair in (unused, pool_pair):
        url = reverse("elicitation:attention_check_remove", args=[study.slug, pair.pk])
        assert client_r.post(url).status_code == 302

    assert not Pair.objects.filter(pk=unused.pk).exists()
    pool_pair.refresh_from_db()
    assert (pool_pair.is_attention_check, pool_pair.correct_response_id) == (False, None)


# --- status --------------------------------------------------------------------------------------


def test_study_opens_and_closes_with_the_status_buttons(client_r, study) -> None:
    url = reverse("elicitation:study_status", args=[study.slug])
    assert client_r.post(url, {"status": "open"}).status_code == 302
    study.refresh_from_db()
    assert study.status == Study.Status.OPEN
    client_r.post(url, {"status": "closed"})
    study.refresh_from_db()
    assert study.status == Study.Status.CLOSED


def test_study_without_pairs_cannot_open(client_r, researcher) -> None:
    empty = StudyFactory(owner=researcher, status=Study.Status.DRAFT)
    response = client_r.post(reverse("elicitation:study_status", args=[empty.slug]), {"status": "open"}, follow=True)
    empty.refresh_from_db()
    assert empty.status == Study.Status.DRAFT
    assert "no pairs to show" in response.content.decode()


def test_status_change_needs_post(client_r, study) -> None:
    assert client_r.get(reverse("elicitation:study_status", args=[study.slug])).status_code == 405


# --- who may see what ----------------------------------------------------------------------------


def _study_routes(study: Study) -> list[tuple[str, str]]:
    check = study.pairs.first()
    Pair.objects.filter(pk=check.pk).update(is_attention_check=True, correct_response=check.response_a)
    return [
        ("get", reverse("monitor:study_detail", args=[study.slug])),
        ("get", reverse("elicitation:study_edit", args=[study.slug])),
        ("post", reverse("elicitation:study_edit", args=[study.slug])),
        ("get", reverse("elicitation:study_survey", args=[study.slug])),
        ("post", reverse("elicitation:study_survey", args=[study.slug])),
        ("get", reverse("elicitation:attention_checks", args=[study.slug])),
        ("post", reverse("elicitation:attention_checks", args=[study.slug])),
        ("post", reverse("elicitation:attention_check_remove", args=[study.slug, check.pk])),
        ("post", reverse("elicitation:study_status", args=[study.slug])),
    ]


def test_other_researcher_gets_404_on_every_page_of_a_study_and_sees_nothing(other_researcher, study) -> None:
    client = _client_for(other_researcher)
    for method, url in _study_routes(study):
        response = getattr(client, method)(url, {"status": "closed", "title": "Hijacked"})
        assert response.status_code == 404, (method, url)
        assert "My study" not in response.content.decode()
    study.refresh_from_db()
    assert (study.title, study.status) == ("My study", Study.Status.DRAFT)
    assert Pair.objects.filter(study=study, is_attention_check=True).count() == 1


def test_viewer_sees_the_study_page_but_no_edit_page(other_researcher, study) -> None:
    StudyCollaborator.objects.create(study=study, user=other_researcher, role=StudyCollaborator.Role.VIEWER)
    client = _client_for(other_researcher)
    page = client.get(reverse("monitor:study_detail", args=[study.slug]))
    assert page.status_code == 200
    assert "Open to participants" not in page.content.decode()
    assert reverse("elicitation:study_edit", args=[study.slug]) not in page.content.decode()
    for method, url in _study_routes(study)[1:]:
        assert getattr(client, method)(url).status_code == 404, (method, url)


def test_editor_may_edit_and_superuser_may_see_everything(other_researcher, study) -> None:
    StudyCollaborator.objects.create(study=study, user=other_researcher, role=StudyCollaborator.Role.EDITOR)
    assert _client_for(other_researcher).get(reverse("elicitation:study_edit", args=[study.slug])).status_code == 200
    admin = UserFactory(username="root", is_superuser=True, is_staff=True)
    for method, url in _study_routes(study):
        if method == "get":
            assert _client_for(admin).get(url).status_code == 200, url


def _judgment(*, participant: Participant, pair: Pair, strength: int | None = None):
    now = timezone.now()
    return Judgment.objects.create(
        study=participant.study, participant=participant, pair=pair, response_a=pair.response_a,
        response_b=pair.response_b, choice="a", strength=strength, served_at=now, answered_at=now,
    )
