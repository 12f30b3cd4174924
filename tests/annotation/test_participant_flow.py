"""The participant journey through the study link: consent → survey → instructions → judging → done,
declining, resuming, closed studies, withdrawal. Django test client against the real database."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from annotation.models import ConsentRefusal, Judgment, Participant, ServedPair, SurveyAnswer, Withdrawal
from annotation.selectors import completion_redirect_url
from annotation.services import ParticipantIdInUse, participant_consent, survey_submit
from elicitation.models import Pair, Study, SurveyQuestion
from tests.factories import ParticipantFactory, StudyFactory, SurveyQuestionFactory, study_with_pool

pytestmark = pytest.mark.django_db
CODE = "C0MPL3TE"  # StudyFactory's completion code


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # The factories' researchers get hashed passwords; PBKDF2 costs ~1 s a test on this machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def url(study: Study, step: str = "") -> str:
    return f"/s/{study.slug}/{step + '/' if step else ''}"


def join(client: Client, study: Study, pid: str = "PID-1") -> Participant:
    """Open the link as a Prolific participant and agree."""
    client.get(url(study) + f"?PROLIFIC_PID={pid}&STUDY_ID=prolific-study&SESSION_ID=session-1")
    response = client.post(url(study, "consent"), {"decision": "agree"})
    assert response.status_code == 302
    return Participant.objects.get(study=study, external_id=pid)


def judge_all(client: Client, study: Study, count: int) -> None:
    for _ in range(count):
        page = client.get(url(study, "judge"))
        assert page.status_code == 200
        client.post(url(study, "judge"), {"served_id": page.context["served"].id, "choice": "a", "strength": "1"})


def survey_study(**fields: object) -> Study:
    study = study_with_pool(judgments_per_participant=3, **fields)
    SurveyQuestionFactory(study=study, key="age_group", kind="choice", choices=["18-29", "30-49", "50+"], position=0)
    SurveyQuestionFactory(study=study, key="languages", kind="multi_choice", choices=["en", "fr", "de"], position=1)
    SurveyQuestionFactory(
        study=study, key="years_online", kind="number", choices=[], min_value=0, max_value=80, position=2
    )
    SurveyQuestionFactory(study=study, key="comment", kind="text", choices=[], required=False, position=3)
    return study


VALID_SURVEY = {"age_group": "30-49", "languages": ["en", "de"], "years_online": "12", "comment": ""}


# --- Entry and consent ----------------------------------------------------------------------------


def test_link_without_ids_leads_to_consent_and_stores_nothing(client: Client) -> None:
    study = study_with_pool()
    response = client.get(url(study))
    assert response.status_code == 302 and response.url == url(study, "consent")
    page = client.get(response.url)
    assert "I agree" in page.text and "I do not agree" in page.text and study.consent_text in page.text
    assert not Participant.objects.exists() and not ConsentRefusal.objects.exists()


def test_declining_stores_only_a_refusal_and_shows_no_code(client: Client) -> None:
    study = study_with_pool()
    client.get(url(study) + "?PROLIFIC_PID=PID-no")
    response = client.post(url(study, "consent"), {"decision": "decline"})
    assert response.status_code == 302 and response.url == url(study, "declined")
    page = client.get(response.url)
    assert "Nothing about you was stored" in page.text and CODE not in page.text
    assert ConsentRefusal.objects.filter(study=study).count() == 1
    assert not Participant.objects.exists() and not ServedPair.objects.exists()
    # The session holds no participant: later steps go back to the start, never to a code.
    for step in ("done", "judge", "survey", "instructions"):
        assert client.get(url(study, step)).url == url(study)


def test_consent_without_a_decision_is_a_clear_error(client: Client) -> None:
    study = study_with_pool()
    client.get(url(study))
    response = client.post(url(study, "consent"), {"decision": "maybe"})
    assert response.status_code == 400 and "I do not agree" in response.text
    assert not Participant.objects.exists() and not ConsentRefusal.objects.exists()


def test_agreeing_creates_the_prolific_participant_with_platform_ids(client: Client) -> None:
    study = study_with_pool()
    participant = join(client, study, pid="5f1a")
    assert participant.source == Participant.Source.PROLIFIC
    assert (participant.platform_study_id, participant.platform_session_id) == ("prolific-study", "session-1")
    assert participant.consented_at is not None


def test_generic_pid_parameter_is_accepted(client: Client) -> None:
    study = study_with_pool()
    client.get(url(study) + "?pid=panel-77")
    client.post(url(study, "consent"), {"decision": "agree"})
    assert Participant.objects.get().external_id == "panel-77"
    assert Participant.objects.get().source == Participant.Source.PID


def test_anonymous_participant_gets_a_random_id_at_consent(client: Client) -> None:
    study = study_with_pool()
    client.get(url(study))
    client.post(url(study, "consent"), {"decision": "agree"})
    participant = Participant.objects.get()
    assert participant.source == Participant.Source.ANONYMOUS and participant.external_id.startswith("anon-")
    assert len(participant.external_id) == len("anon-") + 32
    # The same browser coming back to the link is the same participant.
    assert client.get(url(study)).url == url(study, "instructions")
    assert Participant.objects.count() == 1


@pytest.mark.parametrize(
    "query",
    ["PROLIFIC_PID={{%25PROLIFIC_PID%25}}", "PROLIFIC_PID=" + "x" * 201, "pid=%25PROLIFIC_PID%25"],
)
def test_malformed_recruitment_link_is_rejected_clearly(client: Client, query: str) -> None:
    study = study_with_pool()
    response = client.get(url(study) + "?" + query)
    assert response.status_code == 400 and "This study link is not valid" in response.text
    assert client.get(url(study, "judge")).url == url(study)
    assert not Participant.objects.exists()


def _midway(client: Client, study: Study, pid: str) -> ServedPair:
    """Join as `pid` (Prolific SESSION_ID "session-1"), answer one pair; the outstanding pair."""
    join(client, study, pid=pid)
    client.post(url(study, "survey"), VALID_SURVEY)
    client.post(url(study, "instructions"))
    first = client.get(url(study, "judge")).context["served"]
    client.post(url(study, "judge"), {"served_id": first.id, "choice": "b", "strength": "2"})
    return client.get(url(study, "judge")).context["served"]


def _stored() -> tuple[int, ...]:
    return (Participant.objects.count(), ServedPair.objects.count(), Judgment.objects.count(),
            Withdrawal.objects.count(), ConsentRefusal.objects.count(), SurveyAnswer.objects.count())


def test_returning_in_the_same_browser_resumes_where_they_left_off(client: Client) -> None:
    study = survey_study()
    outstanding = _midway(client, study, pid="PID-back")
    response = client.get(url(study) + "?PROLIFIC_PID=PID-back&STUDY_ID=prolific-study&SESSION_ID=session-1")
    assert response.status_code == 302 and response.url == url(study, "judge")
    page = client.get(response.url)
    assert page.context["served"].id == outstanding.id and "1 of 3 done" in page.text
    assert Participant.objects.count() == 1


def test_the_same_prolific_session_on_another_device_resumes(client: Client) -> None:
    study = survey_study()
    outstanding = _midway(client, study, pid="PID-back")
    other_browser = Client()
    response = other_browser.get(url(study) + "?PROLIFIC_PID=PID-back&STUDY_ID=prolific-study&SESSION_ID=session-1")
    assert response.status_code == 302 and response.url == url(study, "judge")
    page = other_browser.get(response.url)
    assert page.context["served"].id == outstanding.id and "1 of 3 done" in page.text
    assert Participant.objects.count() == 1


@pytest.mark.parametrize("session_param", ["", "&SESSION_ID=", "&SESSION_ID=session-2", "&SESSION_ID=session-1x"])
def test_a_known_prolific_id_in_another_browser_is_refused_and_shows_nothing(
    client: Client, session_param: str
) -> None:
    """Whoever knows a PID must not see the participant's pair, answer for them or withdraw them."""
    study = survey_study()
    outstanding = _midway(client, study, pid="PID-back")
    before = _stored()
    stranger = Client()
    response = stranger.get(url(study) + "?PROLIFIC_PID=PID-back&STUDY_ID=prolific-study" + session_param)
    assert response.status_code == 409
    assert "already started the study in another browser session" in response.text
    assert "open the study link from there again" in response.text and "contact the researchers" in response.text
    for shown in (outstanding.pair.prompt.text, outstanding.left_response.text, outstanding.right_response.text,
                  "1 of 3 done", "PID-back", "session-1", CODE, "Withdraw"):
        assert shown not in response.text, shown
    assert settings.SESSION_COOKIE_NAME not in response.cookies  # the stranger's session is not written
    # Nothing of the participant is reachable from that browser afterwards, and nothing was written.
    for step in ("judge", "survey", "instructions", "done", "withdraw"):
        assert stranger.get(url(study, step)).url == url(study), step
    assert stranger.post(url(study, "withdraw"), {"confirm": "yes"}).url == url(study)
    assert _stored() == before
    assert client.get(url(study, "judge")).context["served"].id == outstanding.id  # the owner is unaffected


def test_a_known_generic_pid_in_another_browser_is_refused(client: Client) -> None:
    """A participant who stored no platform session id resumes in their own browser only."""
    study = study_with_pool()
    client.get(url(study) + "?pid=panel-77")
    client.post(url(study, "consent"), {"decision": "agree"})
    before = _stored()
    for query in ("?pid=panel-77", "?PROLIFIC_PID=panel-77", "?PROLIFIC_PID=panel-77&SESSION_ID="):
        assert Client().get(url(study) + query).status_code == 409, query
    assert _stored() == before
    assert client.get(url(study) + "?pid=panel-77").url == url(study, "instructions")


def test_a_browsers_participant_is_kept_when_its_link_names_someone_elses_id(client: Client) -> None:
    study = study_with_pool()
    join(client, study, pid="mine")
    join(Client(), study, pid="theirs")
    assert client.get(url(study) + "?PROLIFIC_PID=theirs").status_code == 409
    assert client.get(url(study, "judge")).url == url(study, "instructions")  # still "mine"
    assert Participant.objects.get(external_id="mine").pk == client.session["participants"][study.slug]


def test_an_id_that_another_browser_agreed_with_meanwhile_is_refused_at_consent(client: Client) -> None:
    """Two browsers open the link with one id; the first to agree is the participant."""
    study = study_with_pool()
    late = Client()
    late.get(url(study) + "?PROLIFIC_PID=twice&SESSION_ID=s-a")
    join(client, study, pid="twice")  # SESSION_ID session-1
    assert late.get(url(study, "consent")).status_code == 409
    response = late.post(url(study, "consent"), {"decision": "agree"})
    assert response.status_code == 409 and "already started" in response.text
    assert Participant.objects.count() == 1 and late.get(url(study, "instructions")).url == url(study)


def test_two_browsers_agreeing_at_the_same_moment_do_not_share_a_participant(client: Client, monkeypatch) -> None:
    """The other browser agrees between this one's check and its insert. The timing cannot be made to
    happen on demand, so the view's early check is switched off (monkeypatched) to reach that point:
    participant_consent's own check on the row it finds must still refuse."""
    from annotation import views

    study = study_with_pool()
    late = Client()
    late.get(url(study) + "?PROLIFIC_PID=twice&SESSION_ID=s-a")
    join(client, study, pid="twice")
    monkeypatch.setattr(views, "_id_taken_by_another", lambda request, **kwargs: False)
    response = late.post(url(study, "consent"), {"decision": "agree"})
    assert response.status_code == 409 and "already started" in response.text
    assert Participant.objects.count() == 1 and late.get(url(study, "instructions")).url == url(study)


def test_consent_with_may_resume_refuses_an_existing_id_and_writes_nothing() -> None:
    study = study_with_pool()
    first = participant_consent(study=study, external_id="pid-9", source=Participant.Source.PROLIFIC)
    with pytest.raises(ParticipantIdInUse):
        participant_consent(study=study, external_id="pid-9", source=Participant.Source.PROLIFIC,
                            may_resume=lambda found: False)
    again = participant_consent(study=study, external_id="pid-9", source=Participant.Source.PROLIFIC,
                                may_resume=lambda found: found.pk == first.pk)
    assert again.pk == first.pk and Participant.objects.count() == 1


def test_a_new_id_in_the_link_replaces_the_browsers_previous_participant(client: Client) -> None:
    study = study_with_pool()
    join(client, study, pid="first")
    assert client.get(url(study) + "?PROLIFIC_PID=second").url == url(study, "consent")
    assert client.get(url(study, "judge")).url == url(study)  # "first" is no longer this browser's
    client.post(url(study, "consent"), {"decision": "agree"})
    assert set(Participant.objects.values_list("external_id", flat=True)) == {"first", "second"}


# --- Steps ------------------------------------------------------------------------------------------


def test_each_step_redirects_to_the_step_the_participant_is_on(client: Client) -> None:
    study = survey_study()
    join(client, study)
    for step in ("judge", "instructions", "done", "consent"):
        assert client.get(url(study, step)).url == url(study, "survey"), step
    client.post(url(study, "survey"), VALID_SURVEY)
    for step in ("judge", "survey", "done", "consent"):
        assert client.get(url(study, step)).url == url(study, "instructions"), step
    assert client.post(url(study, "instructions")).url == url(study, "judge")
    for step in ("survey", "done", "consent"):
        assert client.get(url(study, step)).url == url(study, "judge"), step
    assert client.get(url(study, "instructions")).status_code == 200  # may be re-read while judging


def test_survey_step_is_skipped_when_the_study_has_no_questions(client: Client) -> None:
    study = study_with_pool()
    client.get(url(study))
    assert client.post(url(study, "consent"), {"decision": "agree"}).url == url(study, "instructions")
    assert client.get(url(study, "survey")).url == url(study, "instructions")


def test_survey_renders_each_kind_of_question(client: Client) -> None:
    study = survey_study()
    join(client, study)
    page = client.get(url(study, "survey")).text
    assert page.count('type="radio" name="age_group"') == 3
    assert page.count('type="checkbox" name="languages"') == 3
    assert 'type="number" name="years_online"' in page and 'min="0.0"' in page and 'max="80.0"' in page
    assert '<textarea name="comment"' in page and "(optional)" in page


def test_survey_errors_are_shown_per_field_and_nothing_is_stored(client: Client) -> None:
    study = survey_study()
    participant = join(client, study)
    response = client.post(url(study, "survey"), {"age_group": "12-17", "years_online": "200"})
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert set(errors) == {"age_group", "languages", "years_online"}
    assert "Enter a number of at most 80." in response.text
    assert "This question is required." in response.text
    assert not SurveyAnswer.objects.exists()
    participant.refresh_from_db()
    assert participant.attributes == {} and participant.survey_completed_at is None


def test_survey_answers_are_stored_and_copied_into_attributes(client: Client) -> None:
    study = survey_study()
    participant = join(client, study)
    response = client.post(url(study, "survey"), VALID_SURVEY)
    assert response.url == url(study, "instructions")
    participant.refresh_from_db()
    assert participant.attributes == {"age_group": "30-49", "languages": "en;de", "years_online": 12}
    assert participant.survey_completed_at is not None
    stored = {a.question.key: a.value for a in SurveyAnswer.objects.select_related("question")}
    assert stored == {"age_group": "30-49", "languages": ["en", "de"], "years_online": 12}
    # Submitting again (back button) changes nothing.
    client.post(url(study, "survey"), {**VALID_SURVEY, "age_group": "50+"})
    participant.refresh_from_db()
    assert participant.attributes["age_group"] == "30-49" and SurveyAnswer.objects.count() == 3


def test_survey_service_rejects_bad_answers_all_at_once() -> None:
    study = survey_study()
    participant = ParticipantFactory(study=study)
    with pytest.raises(ValidationError) as exc:
        survey_submit(
            participant=participant,
            answers={"age_group": "30-49", "languages": ["xx"], "years_online": "many", "shoe_size": 44},
        )
    assert set(exc.value.message_dict) == {"languages", "years_online", "__all__"}
    assert "shoe_size" in exc.value.message_dict["__all__"][0]
    assert not SurveyAnswer.objects.exists()


def test_survey_number_keeps_fractions_and_checks_the_minimum() -> None:
    study = StudyFactory()
    question = SurveyQuestionFactory(study=study, key="hours", kind=SurveyQuestion.Kind.NUMBER, choices=[], min_value=1)
    participant = ParticipantFactory(study=study)
    with pytest.raises(ValidationError, match="at least 1"):
        survey_submit(participant=participant, answers={"hours": 0.5})
    survey_submit(participant=participant, answers={"hours": "2.5"})
    assert SurveyAnswer.objects.get(question=question).value == 2.5


# --- Closed studies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [Study.Status.DRAFT, Study.Status.CLOSED])
def test_study_that_is_not_open_says_so_and_stores_nothing(client: Client, status: str) -> None:
    study = study_with_pool(status=status)
    response = client.get(url(study) + "?PROLIFIC_PID=early")
    assert response.status_code == 403 and "This study is not accepting answers" in response.text
    response = client.post(url(study, "consent"), {"decision": "agree"})
    assert response.status_code == 403
    assert not Participant.objects.exists() and not ConsentRefusal.objects.exists()


def test_closing_a_study_stops_a_participant_midway(client: Client) -> None:
    study = study_with_pool()
    join(client, study)
    client.post(url(study, "instructions"))
    served = client.get(url(study, "judge")).context["served"]
    Study.objects.filter(pk=study.pk).update(status=Study.Status.CLOSED)
    response = client.post(url(study, "judge"), {"served_id": served.id, "choice": "a", "strength": "1"})
    assert response.status_code == 403 and "not accepting answers" in response.text
    assert not Judgment.objects.exists()


def test_unknown_study_is_404(client: Client) -> None:
    assert client.get("/s/no-such-study/").status_code == 404
    assert client.get("/s/no-such-study/judge/").status_code == 404


# --- Completion -----------------------------------------------------------------------------------------


def test_completion_code_appears_only_after_the_last_judgment_is_stored(client: Client) -> None:
    study = study_with_pool(judgments_per_participant=3)
    join(client, study)
    client.post(url(study, "instructions"))
    for _ in range(3):
        page = client.get(url(study, "judge"))
        assert CODE not in page.text
        assert client.get(url(study, "done")).url == url(study, "judge")
        response = client.post(
            url(study, "judge"), {"served_id": page.context["served"].id, "choice": "a", "strength": "1"}
        )
    assert response.url == url(study, "done")
    done = client.get(url(study, "done"))
    assert done.status_code == 200 and CODE in done.text
    assert Judgment.objects.count() == 3
    assert client.get(url(study, "judge")).url == url(study, "done")


def test_done_page_sends_the_participant_back_with_the_code(client: Client) -> None:
    study = study_with_pool(judgments_per_participant=1, redirect_url="https://app.prolific.com/submissions/complete")
    join(client, study)
    client.post(url(study, "instructions"))
    judge_all(client, study, 1)
    page = client.get(url(study, "done")).text
    target = "https://app.prolific.com/submissions/complete?cc=C0MPL3TE"
    assert f'content="10;url={target}"' in page and f'href="{target}"' in page


def test_completed_participant_still_gets_the_code_after_the_study_closes(client: Client) -> None:
    study = study_with_pool(judgments_per_participant=1)
    join(client, study, pid="finisher")
    client.post(url(study, "instructions"))
    judge_all(client, study, 1)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.CLOSED)
    assert client.get(url(study) + "?PROLIFIC_PID=finisher").url == url(study, "done")
    assert CODE in client.get(url(study, "done")).text


@pytest.mark.parametrize(
    ("redirect_url", "expected"),
    [
        ("", ""),
        ("https://example.org/back?code={code}", "https://example.org/back?code=C0MPL3TE"),
        ("https://app.prolific.com/submissions/complete?cc=C0MPL3TE", "https://app.prolific.com/submissions/complete?cc=C0MPL3TE"),
        ("https://example.org/thanks?src=x", "https://example.org/thanks?src=x&cc=C0MPL3TE"),
    ],
)
def test_completion_redirect_url_carries_the_code(redirect_url: str, expected: str) -> None:
    assert completion_redirect_url(study=StudyFactory.build(redirect_url=redirect_url)) == expected


# --- Withdrawal -----------------------------------------------------------------------------------------


def test_every_page_after_consent_offers_withdrawal(client: Client) -> None:
    study = survey_study(redirect_url="")
    assert "Withdraw and delete my data" not in client.get(url(study, "consent")).text
    join(client, study)
    assert "Withdraw and delete my data" in client.get(url(study, "survey")).text
    client.post(url(study, "survey"), VALID_SURVEY)
    assert "Withdraw and delete my data" in client.get(url(study, "instructions")).text
    client.post(url(study, "instructions"))
    assert "Withdraw and delete my data" in client.get(url(study, "judge")).text
    judge_all(client, study, 3)
    assert "Withdraw and delete my data" in client.get(url(study, "done")).text


def test_withdrawal_asks_for_confirmation_first(client: Client) -> None:
    study = study_with_pool()
    join(client, study)
    page = client.get(url(study, "withdraw"))
    assert page.status_code == 200 and "Yes, withdraw and delete my data" in page.text
    assert client.post(url(study, "withdraw")).status_code == 400
    assert Participant.objects.count() == 1 and not Withdrawal.objects.exists()


def test_withdrawal_deletes_the_participants_data_and_keeps_a_count(client: Client) -> None:
    study = survey_study()
    participant = join(client, study)
    client.post(url(study, "survey"), VALID_SURVEY)
    client.post(url(study, "instructions"))
    judge_all(client, study, 2)
    client.get(url(study, "judge"))  # an outstanding served pair too
    assert sum(Pair.objects.values_list("judgment_count", flat=True)) == 2

    response = client.post(url(study, "withdraw"), {"confirm": "yes"})
    assert response.url == url(study, "withdrawn")
    assert "were deleted" in client.get(response.url).text
    assert not Participant.objects.filter(pk=participant.pk).exists()
    assert not Judgment.objects.exists() and not ServedPair.objects.exists() and not SurveyAnswer.objects.exists()
    assert sum(Pair.objects.values_list("judgment_count", flat=True)) == 0
    withdrawal = Withdrawal.objects.get()
    assert (withdrawal.study_id, withdrawal.judgments_removed) == (study.pk, 2)
    # The session forgot the participant: the link starts over at consent.
    assert client.get(url(study, "judge")).url == url(study)
    assert client.get(url(study)).url == url(study, "consent")


def test_withdrawal_leaves_other_participants_alone(client: Client) -> None:
    study = study_with_pool(judgments_per_participant=2)
    join(client, study, pid="leaver")
    client.post(url(study, "instructions"))
    judge_all(client, study, 2)
    stayer = Client()
    join(stayer, study, pid="stayer")
    stayer.post(url(study, "instructions"))
    judge_all(stayer, study, 2)
    client.post(url(study, "withdraw"), {"confirm": "yes"})
    assert list(Participant.objects.values_list("external_id", flat=True)) == ["stayer"]
    assert Judgment.objects.count() == 2
    assert sum(Pair.objects.values_list("judgment_count", flat=True)) == 2


def test_withdraw_without_a_participant_goes_back_to_the_link(client: Client) -> None:
    study = study_with_pool()
    assert client.post(url(study, "withdraw"), {"confirm": "yes"}).url == url(study)
    assert not Withdrawal.objects.exists()


def test_anonymous_ids_are_unique(client: Client) -> None:
    study = study_with_pool()
    for _ in range(3):
        browser = Client()
        browser.get(url(study))
        browser.post(url(study, "consent"), {"decision": "agree"})
    assert Participant.objects.filter(source="anonymous").values("external_id").distinct().count() == 3
    assert all(p.consented_at <= timezone.now() for p in Participant.objects.all())
