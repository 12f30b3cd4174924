"""The researcher's study page: progress numbers on a study built by hand, partials, pagination."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation.models import ConsentRefusal, Judgment, Participant, ServedPair, Withdrawal
from annotation.selectors_research import study_progress
from elicitation.models import Pair, Study
from tests.factories import ParticipantFactory, PromptFactory, ResponseFactory, pair_create, study_with_pool

pytestmark = pytest.mark.django_db

T0 = timezone.now().replace(microsecond=0) - timedelta(days=1)


def _annotate(participant: Participant, pair: Pair, *, seconds: int, passed: bool | None = None) -> Judgment:
    """What the submit service stores for one answered serving (written directly here)."""
    served_at = T0 + timedelta(minutes=Judgment.objects.count())
    served = ServedPair.objects.create(
        participant=participant, pair=pair, left_response=pair.response_a, right_response=pair.response_b,
        served_at=served_at, answered_at=served_at + timedelta(seconds=seconds),
    )
    return Judgment.objects.create(
        study=pair.study, participant=participant, pair=pair, served_pair=served, response_a=pair.response_a,
        response_b=pair.response_b, choice="a", policy="random", is_attention_check=pair.is_attention_check,
        attention_passed=passed, served_at=served.served_at, answered_at=served.answered_at,
    )


@pytest.fixture
def built(researcher) -> dict[str, object]:
    study = study_with_pool(prompts=2, responses_per_prompt=3, owner=researcher, slug="built",
                            judgments_per_participant=3, overlap_target=2)
    pairs = list(study.pairs.order_by("id"))
    check_prompt = PromptFactory(study=study)
    good, bad = ResponseFactory(prompt=check_prompt), ResponseFactory(prompt=check_prompt)
    check = pair_create(prompt=check_prompt, first=good, second=bad, is_attention_check=True, correct_response=good)

    p1 = ParticipantFactory(study=study, external_id="PROLIFIC-1", source=Participant.Source.PROLIFIC)
    _annotate(p1, pairs[0], seconds=10)
    _annotate(p1, check, seconds=20, passed=True)
    _annotate(p1, pairs[1], seconds=30)
    Participant.objects.filter(pk=p1.pk).update(judgment_count=3, completed_at=T0 + timedelta(hours=1))
    p2 = ParticipantFactory(study=study, external_id="pid-2", source=Participant.Source.PID)
    _annotate(p2, pairs[0], seconds=50)
    _annotate(p2, check, seconds=40, passed=False)
    ParticipantFactory(study=study, external_id="anon-3", source=Participant.Source.ANONYMOUS)
    imported = ParticipantFactory(study=study, external_id="dataset-annotator", source=Participant.Source.IMPORT)
    for n in range(2):
        Judgment.objects.create(
            study=study, participant=imported, pair=pairs[2], response_a=pairs[2].response_a,
            response_b=pairs[2].response_b, choice="b", origin=Judgment.Origin.IMPORTED, external_id=f"hf-{n}",
            answered_at=T0,
        )
    # The services keep these counters alongside each judgment.
    for pair, count in ((pairs[0], 2), (pairs[1], 1), (pairs[2], 2), (check, 2)):
        Pair.objects.filter(pk=pair.pk).update(judgment_count=count)
    ConsentRefusal.objects.create(study=study)
    ConsentRefusal.objects.create(study=study)
    Withdrawal.objects.create(study=study, judgments_removed=4)
    # Another study's rows must not leak into the numbers.
    other = study_with_pool(prompts=1, responses_per_prompt=2)
    _annotate(ParticipantFactory(study=other), other.pairs.first(), seconds=999)
    ConsentRefusal.objects.create(study=other)
    return {"study": study}


def test_progress_numbers_match_the_hand_built_study(built, django_assert_max_num_queries) -> None:
    with django_assert_max_num_queries(6):
        progress = study_progress(study=built["study"])

    assert (progress.judgments_total, progress.judgments_annotated, progress.judgments_imported) == (7, 5, 2)
    assert (progress.participants_total, progress.participants_completed) == (3, 1)  # imported annotator left out
    assert progress.participants_in_progress == 2
    assert progress.completion_rate == pytest.approx(1 / 3)
    assert (progress.pairs_total, progress.pairs_below_target) == (6, 4)
    # Times to answer: 10, 20, 30, 50, 40 s (imported judgments have none).
    assert progress.median_time_per_judgment == timedelta(seconds=30)
    assert progress.median_seconds_per_judgment == 30.0
    assert (progress.attention_checks_answered, progress.attention_checks_passed) == (2, 1)
    assert progress.attention_pass_rate == 0.5
    assert (progress.consent_refusals, progress.withdrawals, progress.judgments_withdrawn) == (2, 1, 4)


def test_median_of_an_even_number_of_times_is_the_mean_of_the_middle_two(researcher) -> None:
    study = study_with_pool(prompts=1, responses_per_prompt=3, owner=researcher)
    participant = ParticipantFactory(study=study)
    for seconds, pair in zip((4, 1, 10, 6), [*study.pairs.all(), study.pairs.first()], strict=True):
        _annotate(participant, pair, seconds=seconds)
    assert study_progress(study=study).median_time_per_judgment == timedelta(seconds=5)


def test_empty_study_has_no_rates() -> None:
    progress = study_progress(study=study_with_pool(prompts=1, responses_per_prompt=2))
    assert progress.judgments_total == 0
    assert progress.completion_rate is None
    assert progress.attention_pass_rate is None
    assert progress.median_time_per_judgment is None


def test_study_page_shows_progress_links_and_participants(built, client, researcher, django_assert_max_num_queries) -> None:
    client.force_login(researcher)
    with django_assert_max_num_queries(12):
        response = client.get(reverse("monitor:study_detail", args=["built"]))

    body = response.content.decode()
    assert response.status_code == 200
    assert "Judgments so far" in body and ">7<" in body
    assert "33%" in body  # completion rate
    assert "50%" in body  # attention checks passed
    assert "30.0 s" in body  # median time per judgment
    assert "Consent refusals" in body and "Withdrawals" in body
    assert "http://testserver/s/built/" in body
    assert "/s/built/?PROLIFIC_PID={{%PROLIFIC_PID%}}&amp;STUDY_ID={{%STUDY_ID%}}&amp;SESSION_ID={{%SESSION_ID%}}" in body
    assert reverse("imports:import", args=["built"]) in body
    assert reverse("exports:export", args=["built"]) in body
    assert 'hx-trigger="every 5s"' in body
    rows = {p.external_id: p for p in response.context["page"].object_list}
    assert (rows["PROLIFIC-1"].answered, rows["PROLIFIC-1"].attention_passed, rows["PROLIFIC-1"].attention_answered) == (3, 1, 1)
    assert (rows["pid-2"].answered, rows["pid-2"].attention_passed, rows["pid-2"].attention_answered) == (2, 0, 1)
    assert rows["anon-3"].answered == 0
    assert 'aria-label="3 of 3 judgments"' in body


def test_htmx_poll_returns_only_the_stats_fragment(built, client, researcher) -> None:
    client.force_login(researcher)
    url = reverse("monitor:study_detail", args=["built"])
    response = client.get(url, headers={"HX-Request": "true", "HX-Target": "study-stats"})

    body = response.content.decode()
    assert response.status_code == 200
    assert "Judgments so far" in body
    assert "<html" not in body and "Participant links" not in body


def test_polling_stops_once_the_study_is_closed(built, client, researcher) -> None:
    Study.objects.filter(slug="built").update(status=Study.Status.CLOSED)
    client.force_login(researcher)
    url = reverse("monitor:study_detail", args=["built"])

    poll = client.get(url, headers={"HX-Request": "true", "HX-Target": "study-stats"})
    page = client.get(url)

    assert poll.status_code == 286  # htmx stops polling on this status
    assert "Judgments so far" in poll.content.decode()
    assert "hx-trigger" not in page.content.decode()


def test_participant_table_is_paginated_and_pages_come_as_fragments(researcher, client) -> None:
    study = study_with_pool(prompts=1, responses_per_prompt=2, owner=researcher, slug="busy")
    for n in range(30):
        ParticipantFactory(study=study, external_id=f"person-{n:02d}")
    client.force_login(researcher)
    url = reverse("monitor:study_detail", args=["busy"])

    first = client.get(url).content.decode()
    second = client.get(url, {"page": 2}, headers={"HX-Request": "true", "HX-Target": "participants"})

    assert "person-29" in first and "person-04" not in first  # newest first, 25 a page
    body = second.content.decode()
    assert "person-04" in body and "person-29" not in body
    assert "<html" not in body and "Judgments so far" not in body
    assert 'href="?page=1"' in body and 'hx-get="?page=1"' in body


def test_other_researcher_gets_404_for_the_study_page_and_its_fragments(built, client, other_researcher) -> None:
    client.force_login(other_researcher)
    url = reverse("monitor:study_detail", args=["built"])
    for headers in ({}, {"HX-Request": "true", "HX-Target": "study-stats"}):
        response = client.get(url, headers=headers)
        assert response.status_code == 404
        assert "PROLIFIC-1" not in response.content.decode()
