"""Excluding participants: recorded with a reason, applied to training and exports, reversible."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from annotation.exclusions import (
    participant_exclude,
    participant_exclusion_revoke,
    participants_below_attention,
)
from annotation.exports import export_row_count, export_rows
from annotation.models import ParticipantExclusion
from annotation.selectors_training import judgment_count_for_training, judgments_for_training
from modeling.analytics_services import study_analytics_compute
from tests.modeling.insight_planted import InsightStudy, insight_study_create

pytestmark = pytest.mark.django_db

PER_PARTICIPANT = 45  # 40 pairs + 5 repeats; the 3 attention checks are neither trained on nor exported


@pytest.fixture
def planted(researcher: Any) -> InsightStudy:
    return insight_study_create(owner=researcher)


def _annotators(planted: InsightStudy) -> set[str]:
    return {row["annotator"] for row in export_rows(study=planted.study)}


def test_exclusion_applies_to_training_and_exports_and_is_reversible(planted: InsightStudy, researcher: Any) -> None:
    clicker = planted.members["random"][0]
    study = planted.study
    before_training = judgment_count_for_training(study_id=study.pk)
    before_export = export_row_count(study=study, export_format="jsonl", include_attention_checks=False)

    exclusion, created = participant_exclude(participant=clicker, reason="Random clicking", created_by=researcher)
    assert created and exclusion.reason == "Random clicking" and exclusion.created_by == researcher
    assert judgment_count_for_training(study_id=study.pk) == before_training - PER_PARTICIPANT
    assert "random-clicker" not in {row[0] for row in judgments_for_training(study=study)}
    assert export_row_count(study=study, export_format="jsonl", include_attention_checks=False) == (
        before_export - PER_PARTICIPANT)
    assert "random-clicker" not in _annotators(planted)
    assert "random-clicker" not in {r["annotator"] for r in export_rows(study=study, include_attention_checks=True)}

    assert participant_exclusion_revoke(participant=clicker, revoked_by=researcher) == 1
    assert judgment_count_for_training(study_id=study.pk) == before_training
    assert "random-clicker" in _annotators(planted)
    # The record stays, marked revoked: who was excluded, why and when is not forgotten.
    record = ParticipantExclusion.objects.get(participant=clicker)
    assert record.revoked_at is not None and record.revoked_by == researcher


def test_excluding_twice_keeps_one_record(planted: InsightStudy, researcher: Any) -> None:
    clicker = planted.members["random"][0]
    first, created = participant_exclude(participant=clicker, reason="one", created_by=researcher)
    second, created_again = participant_exclude(participant=clicker, reason="two", created_by=researcher)
    assert created and not created_again and first.pk == second.pk and second.reason == "one"
    assert participant_exclusion_revoke(participant=clicker, revoked_by=researcher) == 1
    assert participant_exclusion_revoke(participant=clicker, revoked_by=researcher) == 0
    _, created = participant_exclude(participant=clicker, reason="three", created_by=researcher)
    assert created and ParticipantExclusion.objects.filter(participant=clicker).count() == 2


@pytest.mark.parametrize("reason", ["", "   ", "x" * 301])
def test_a_bad_reason_is_refused_and_nothing_is_written(planted: InsightStudy, researcher: Any, reason: str) -> None:
    with pytest.raises(ValidationError):
        participant_exclude(participant=planted.members["random"][0], reason=reason, created_by=researcher)
    assert not ParticipantExclusion.objects.exists()


def test_attention_rule_finds_only_the_participant_failing_checks(planted: InsightStudy) -> None:
    ids = participants_below_attention(study=planted.study, min_pass_rate=0.8)
    assert ids == [planted.members["careless"][0].pk]


def test_rule_form_excludes_by_attention_and_by_flag(planted: InsightStudy, researcher: Any, client: Client) -> None:
    client.force_login(researcher)
    url = f"/studies/{planted.study.slug}/insight/quality/exclude-by-rule/"
    response = client.post(url, {"rule": "attention_below", "min_pass_rate": "0.8"})
    assert response.status_code == 302
    excluded = ParticipantExclusion.objects.filter(revoked_at__isnull=True)
    assert [e.participant.external_id for e in excluded] == ["fails-checks"]
    assert excluded.get().rule == "attention_below" and "80%" in excluded.get().reason

    study_analytics_compute(study_id=planted.study.pk)
    client.post(url, {"rule": "flagged"})
    assert set(excluded.values_list("participant__external_id", flat=True)) == {"fails-checks", "random-clicker"}
    # Minority members are never swept up by the reliability rule.
    assert not excluded.filter(participant__external_id__startswith="minority").exists()


def test_rule_form_refuses_a_bad_bar_and_writes_nothing(planted: InsightStudy, researcher: Any, client: Client) -> None:
    client.force_login(researcher)
    url = f"/studies/{planted.study.slug}/insight/quality/exclude-by-rule/"
    for data in ({"rule": "attention_below", "min_pass_rate": "1.5"}, {"rule": "attention_below"}, {"rule": "nope"}):
        response = client.post(url, data, follow=True)
        assert response.status_code == 200
        assert any(m.level_tag == "error" for m in response.context["messages"])
    assert not ParticipantExclusion.objects.exists()


def test_exclude_and_include_again_from_the_quality_page(
    planted: InsightStudy, researcher: Any, client: Client,
) -> None:
    client.force_login(researcher)
    study_analytics_compute(study_id=planted.study.pk)
    clicker = planted.members["random"][0]
    base = f"/studies/{planted.study.slug}/insight/quality/"
    client.post(base + "exclude/", {"participant": clicker.pk, "reason": "Flagged: unreliable"})
    html = client.get(base).content.decode()
    assert "Include again" in html and "Flagged: unreliable" in html
    client.post(base + "revoke/", {"participant": clicker.pk})
    assert not ParticipantExclusion.objects.filter(revoked_at__isnull=True).exists()


def test_a_participant_of_another_study_cannot_be_excluded(
    planted: InsightStudy, researcher: Any, client: Client,
) -> None:
    other = insight_study_create(owner=researcher, seed=9)
    client.force_login(researcher)
    response = client.post(f"/studies/{planted.study.slug}/insight/quality/exclude/",
                           {"participant": other.members["random"][0].pk, "reason": "x"})
    assert response.status_code == 404 and not ParticipantExclusion.objects.exists()
