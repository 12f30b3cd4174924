"""Insight with a trained reward model: groups and the group map come from the model's weights.

The planted study (tests/modeling/insight_planted.py) gets a real two-group PAL-A model, trained
through the training service on the real embedder (small and fast: tests/modeling/conftest.py
FAST), before the analysis runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from django.test import Client

from modeling.analytics_services import study_analytics_compute
from modeling.core.metrics import adjusted_rand_index
from modeling.models import AnalyticsSnapshot, ParticipantWeights, StudyModel, TrainingRun
from tests.modeling.conftest import run_sync
from tests.modeling.insight_planted import InsightStudy, insight_study_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def modelled(researcher: Any) -> tuple[InsightStudy, TrainingRun, AnalyticsSnapshot]:
    planted = insight_study_create(owner=researcher)
    run = run_sync(study=planted.study, groups=2)
    assert run.status == TrainingRun.Status.DONE, run.error
    snapshot = study_analytics_compute(study_id=planted.study.pk)
    assert snapshot.status == AnalyticsSnapshot.Status.DONE, snapshot.error
    return planted, run, snapshot


def _rows(data: dict) -> dict[str, dict]:
    return {p["external_id"]: p for p in data["participants"]}


def test_groups_from_the_trained_model_find_the_planted_structure(
    modelled: tuple[InsightStudy, TrainingRun, AnalyticsSnapshot],
) -> None:
    planted, run, snapshot = modelled
    data = snapshot.data
    assert data["group_source"] == f"model run {run.pk}" and snapshot.run_id == run.pk and data["k"] == 2
    rows = _rows(data)
    model_group = dict(ParticipantWeights.objects.filter(run=run).values_list("participant__external_id", "group"))
    people = [f"majority-{i}" for i in range(8)] + [f"minority-{i}" for i in range(4)]
    # The dashboard's groups are the model's groups, and they are the planted ones.
    assert all(rows[name]["group"] == model_group[name] for name in people)
    truth = [name.startswith("minority") for name in people]
    assert adjusted_rand_index(np.array(truth, int), np.array([rows[name]["group"] for name in people])) == 1.0

    assert "unreliable" in rows["random-clicker"]["flags"]
    for i in range(4):
        assert rows[f"minority-{i}"]["flags"] == [] and rows[f"minority-{i}"]["reliability"] >= 0.85
    top = {row["pair_id"] for row in data["divisive"][: len(planted.divisive_pair_ids)]}
    assert len(top & planted.divisive_pair_ids) >= len(planted.divisive_pair_ids) - 2
    majority_group = rows["majority-0"]["group"]
    within = next(g for g in data["agreement"]["groups"] if g["group"] == majority_group)
    assert within["alpha"] > data["agreement"]["overall"]["alpha"] + 0.2


def test_group_map_places_participants_at_their_model_weights(
    modelled: tuple[InsightStudy, TrainingRun, AnalyticsSnapshot], researcher: Any,
) -> None:
    planted, run, snapshot = modelled
    data = snapshot.data
    assert data["map_source"] == "model weights" and data["map_kind"] == "line" and data["map_unplaced"] == 0
    rows = _rows(data)
    for w in ParticipantWeights.objects.filter(run=run).select_related("participant"):
        # K = 2: the position along the line is the weight on group 2.
        assert rows[w.participant.external_id]["x"] == pytest.approx(w.weights[1], abs=1e-4)
    assert all(rows[f"minority-{i}"]["group"] == 1 or rows[f"minority-{i}"]["x"] < 0.5 for i in range(4))
    assert "the model's group weights" in snapshot.plots["map"]

    client = Client()
    client.force_login(researcher)
    html = client.get(f"/studies/{planted.study.slug}/insight/").content.decode()
    assert f"model run {run.pk}" in html and "model weight on group 2" in html
    coloured = client.get(f"/studies/{planted.study.slug}/insight/?fragment=map&colour=country",
                          HTTP_HX_REQUEST="true").content.decode()
    assert "map--country.svg" in coloured and "model weight on group 2" in coloured


def test_minority_members_a_model_misplaces_are_not_taken_for_noise(researcher: Any) -> None:
    """A reward model's groups come from response embeddings and can put a minority member among
    people who choose otherwise. No real training run does that reliably on demand, so this run's
    weights are written by hand: two minority members placed (confidently) in the majority group."""
    planted = insight_study_create(owner=researcher)
    run = TrainingRun.objects.create(study=planted.study, kind="pal-a", status="done", groups_chosen=2)
    StudyModel.objects.create(study=planted.study, current_run=run)
    misplaced = {"minority-0", "minority-1"}
    for members in planted.members.values():
        for participant in members:
            group = 1 if participant.external_id.startswith("minority") else 0
            group = 0 if participant.external_id in misplaced else group
            weights = [0.9, 0.1] if group == 0 else [0.1, 0.9]
            ParticipantWeights.objects.create(run=run, participant=participant, weights=weights, group=group)

    data = study_analytics_compute(study_id=planted.study.pk).data
    rows = _rows(data)
    assert data["group_source"] == f"model run {run.pk}"
    assert {name for name in misplaced if rows[name]["group"] == 0} == misplaced  # shown as the model has them
    for name in misplaced:
        assert rows[name]["reliability_group"] == rows["minority-2"]["group"] == 1
        assert rows[name]["flags"] == [] and rows[name]["reliability"] >= 0.85
    assert data["regrouped"] == 2
    assert "unreliable" in rows["random-clicker"]["flags"]
    client = Client()
    client.force_login(researcher)
    html = client.get(f"/studies/{planted.study.slug}/insight/quality/").content.decode()
    assert 'id="regrouped-note"' in html and "Choices fit group" in html
