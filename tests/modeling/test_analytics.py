"""The insight analysis finds planted structure: careless annotators, a minority group, divisive pairs."""

from __future__ import annotations

import json

import krippendorff
import numpy as np
import pytest

from annotation.models import Judgment
from modeling.analytics_services import study_analytics_compute, study_analytics_request
from modeling.core import analytics as core
from modeling.models import AnalyticsSnapshot
from tests.factories import StudyFactory
from tests.modeling.insight_planted import InsightStudy, insight_study_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def planted(researcher: object) -> InsightStudy:
    return insight_study_create(owner=researcher)


@pytest.fixture
def analysed(planted: InsightStudy) -> tuple[InsightStudy, dict]:
    snapshot = study_analytics_compute(study_id=planted.study.pk)
    assert snapshot.status == AnalyticsSnapshot.Status.DONE, snapshot.error
    return planted, snapshot.data


def _by_external_id(data: dict) -> dict[str, dict]:
    return {p["external_id"]: p for p in data["participants"]}


def test_random_clicker_is_flagged_and_minority_members_are_not(analysed: tuple[InsightStudy, dict]) -> None:
    _, data = analysed
    rows = _by_external_id(data)
    assert "unreliable" in rows["random-clicker"]["flags"]
    assert rows["random-clicker"]["reliability"] < 0.65
    for i in range(4):
        minority = rows[f"minority-{i}"]
        assert minority["flags"] == [], minority
        # They disagree with the crowd on the planted pairs yet agree with their own group.
        assert minority["reliability"] >= 0.85 and minority["agreement_overall"] < 0.75


def test_failed_attention_checks_are_flagged(analysed: tuple[InsightStudy, dict]) -> None:
    _, data = analysed
    rows = _by_external_id(data)
    assert rows["fails-checks"]["attention_rate"] == 0 and "attention" in rows["fails-checks"]["flags"]
    assert rows["majority-0"]["attention_rate"] == 1
    flagged = {p["external_id"] for p in data["participants"] if p["flags"]}
    assert flagged == {"random-clicker", "fails-checks"}


def test_the_two_planted_groups_are_found(analysed: tuple[InsightStudy, dict]) -> None:
    _, data = analysed
    rows = _by_external_id(data)
    assert data["k"] == 2 and data["group_source"] == "latent-class EM"
    # No reward model yet: the map falls back to agreement with each group's majority.
    assert data["map_source"] == "agreement" and data["map_kind"] == "agreement"
    majority = {rows[f"majority-{i}"]["group"] for i in range(8)}
    minority = {rows[f"minority-{i}"]["group"] for i in range(4)}
    assert len(majority) == 1 and len(minority) == 1 and majority != minority


def test_planted_divisive_pairs_rank_on_top(analysed: tuple[InsightStudy, dict]) -> None:
    planted, data = analysed
    top = [row["pair_id"] for row in data["divisive"][: len(planted.divisive_pair_ids)]]
    hits = len(set(top) & planted.divisive_pair_ids)
    assert hits >= len(planted.divisive_pair_ids) - 2, (hits, top)
    assert data["divisive"][0]["pair_id"] in planted.divisive_pair_ids


def test_bridging_responses_are_those_every_group_likes(analysed: tuple[InsightStudy, dict]) -> None:
    planted, data = analysed
    top = {row["response_id"] for row in data["bridging"][:4]}
    assert top == planted.bridging_ids


def test_within_group_alpha_exceeds_overall_alpha(analysed: tuple[InsightStudy, dict]) -> None:
    planted, data = analysed
    overall = data["agreement"]["overall"]
    rows = _by_external_id(data)
    majority_group = rows["majority-0"]["group"]
    within = next(g for g in data["agreement"]["groups"] if g["group"] == majority_group)
    assert within["alpha"] > overall["alpha"] + 0.2
    assert within["low"] > overall["high"]  # the intervals do not even overlap
    assert overall["low"] <= overall["alpha"] <= overall["high"]
    assert overall["units"] == len(planted.pairs)


def test_country_is_associated_with_the_latent_group_and_age_is_not(analysed: tuple[InsightStudy, dict]) -> None:
    _, data = analysed
    association = {a["attribute"]: a for a in data["association"]}
    assert association["country"]["v"] > 0.6 and association["country"]["p"] < 0.01
    assert association["age"]["p"] > 0.05


def test_rankings_put_each_groups_favourite_first(analysed: tuple[InsightStudy, dict]) -> None:
    planted, data = analysed
    rows = _by_external_id(data)
    majority, minority = rows["majority-0"]["group"], rows["minority-0"]["group"]
    for prompt in data["rankings"]:
        by_group = {
            g: max(prompt["responses"], key=lambda r, g=g: r["groups"][g]["score"])["response_id"] for g in (0, 1)
        }
        assert planted.rank[by_group[majority]] == 0
        assert planted.rank[by_group[minority]] == 1
        for r in prompt["responses"]:
            assert r["low"] <= r["score"] <= r["high"]


def test_snapshot_is_json_safe_and_has_every_figure(planted: InsightStudy) -> None:
    snapshot = study_analytics_compute(study_id=planted.study.pk)
    json.dumps(snapshot.data, allow_nan=False)
    assert set(snapshot.plots) == {"map", "agreement", "reliability", "times", "divisive", "bridging",
                                   "group_sizes", "map--age", "map--country"}
    assert all(svg.startswith("<svg") for svg in snapshot.plots.values())
    assert snapshot.progress == 1.0 and snapshot.duration_s > 0


def test_excluded_participants_do_not_shape_the_groups(planted: InsightStudy, researcher: object) -> None:
    from annotation.exclusions import participant_exclude

    participant_exclude(participant=planted.members["random"][0], reason="coin flips", created_by=researcher)
    data = study_analytics_compute(study_id=planted.study.pk).data
    rows = _by_external_id(data)
    assert rows["random-clicker"]["excluded"] and data["counts"]["excluded"] == 1
    assert sum(g["size"] for g in data["groups"]) == 13


def test_a_study_without_judgments_fails_with_a_clear_message(researcher: object) -> None:
    study = StudyFactory(owner=researcher)
    snapshot = study_analytics_compute(study_id=study.pk)
    assert snapshot.status == "failed" and "No preference judgments yet" in snapshot.error
    assert snapshot.data == {} and snapshot.plots == {}


def test_a_second_request_joins_the_active_computation(planted: InsightStudy) -> None:
    first, created = study_analytics_request(study_id=planted.study.pk, enqueue=False)
    second, created_again = study_analytics_request(study_id=planted.study.pk, enqueue=False)
    assert created and not created_again and first.pk == second.pk


def test_running_a_snapshot_twice_computes_once(planted: InsightStudy) -> None:
    from modeling.analytics_tasks import compute_study_analytics

    snapshot, _ = study_analytics_request(study_id=planted.study.pk, enqueue=False)
    assert compute_study_analytics.apply(args=[snapshot.pk]).get() == "done"
    finished = AnalyticsSnapshot.objects.get(pk=snapshot.pk).finished_at
    assert compute_study_analytics.apply(args=[snapshot.pk]).get() == "done"
    assert AnalyticsSnapshot.objects.get(pk=snapshot.pk).finished_at == finished
    assert compute_study_analytics.apply(args=[10**9]).get() == "missing"


def test_ties_count_as_a_third_value(planted: InsightStudy) -> None:
    Judgment.objects.filter(study=planted.study, participant__external_id="majority-0",
                            is_attention_check=False).update(choice="tie")
    snapshot = study_analytics_compute(study_id=planted.study.pk)
    assert snapshot.status == "done", snapshot.error


# --- core, on plain arrays -------------------------------------------------------------------------

def test_vectorised_alpha_matches_the_krippendorff_package() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 4, size=(30, 3)).astype(float)
    counts = counts[counts.sum(axis=1) >= 2]
    ours = core._alpha_from_coincidences(core._unit_coincidences(counts).sum(axis=0))
    theirs = krippendorff.alpha(value_counts=counts, level_of_measurement="nominal")
    assert float(ours) == pytest.approx(theirs, abs=1e-9)


def test_cramers_v_is_one_for_a_perfect_association_and_none_for_one_category() -> None:
    perfect = core.cramers_v([0] * 10 + [1] * 10, ["x"] * 10 + ["y"] * 10)
    assert perfect["v"] == pytest.approx(1.0) and perfect["p"] < 0.001
    assert core.cramers_v([0, 1, 0], ["x", "x", "x"])["v"] is None


def test_time_outliers_use_a_robust_z() -> None:
    z = core.time_robust_z(np.array([8.0, 9.0, 10.0, 11.0, 9.5, 0.4, np.nan]))
    assert z[5] < -core.TIME_OUTLIER_Z and abs(z[2]) < 2 and np.isnan(z[6])


def test_self_consistency_counts_repeats_only() -> None:
    j = core.Judgments(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 0]), np.array([1.0, 0.0, 1.0, 1.0]), 2, 2)
    consistency = core.self_consistency(j)
    assert consistency[0] == pytest.approx(0.5) and np.isnan(consistency[1])


def _planted_arrays(seed: int = 0) -> tuple[core.Judgments, np.ndarray, np.ndarray]:
    """8 majority members, 4 minority members who flip 16 of 40 pairs, and a coin-flipper (index 12).

    Returns the judgments, the planted group labels (the clicker placed with the minority, where
    it is hardest to tell apart) and which pairs the minority flips.
    """
    rng = np.random.default_rng(seed)
    n_pairs = 40
    majority_says_a = rng.random(n_pairs) < 0.5
    flipped = np.zeros(n_pairs, bool)
    flipped[:16] = True
    annotator, pair, outcome = [], [], []
    for i in range(13):
        for p in range(n_pairs):
            if i == 12:
                says_a = rng.random() < 0.5
            else:
                says_a = majority_says_a[p] != (i >= 8 and flipped[p])
                says_a = says_a if rng.random() > 0.04 else not says_a
            annotator.append(i)
            pair.append(p)
            outcome.append(1.0 if says_a else 0.0)
    j = core.Judgments(np.array(annotator), np.array(pair), np.array(outcome), 13, n_pairs)
    labels = np.array([0] * 8 + [1] * 5)
    return j, labels, flipped


def test_reliability_em_within_groups_flags_the_clicker_and_not_the_minority() -> None:
    j, labels, flipped = _planted_arrays()
    fit = core.group_reliability_em(j, labels=labels, k=2)
    assert fit.reliability[12] < 0.65
    assert (fit.reliability[:12] > 0.85).all()
    assert (fit.evidence == 40).all()
    # The latent group preferences are recovered: the minority prefers the other side on the flips.
    minority_says_a = fit.preference[:, 1] > 0.5
    majority_says_a = fit.preference[:, 0] > 0.5
    assert ((minority_says_a != majority_says_a) == flipped).mean() >= 0.95


def test_one_crowd_wide_truth_would_mistake_the_minority_for_noise() -> None:
    j, _, _ = _planted_arrays()
    crowd = core.group_reliability_em(j, labels=np.zeros(13, np.int64), k=1)
    # Against the crowd's majority the minority disagrees on 16 of 40 pairs: what the per-group
    # model is for.
    assert (crowd.reliability[8:12] < 0.7).all() and (crowd.reliability[:8] > 0.85).all()


def test_reliability_em_scores_excluded_annotators_without_letting_them_shape_the_groups() -> None:
    j, labels, _ = _planted_arrays()
    mask = np.ones(13, bool)
    mask[12] = False
    fit = core.group_reliability_em(j, labels=labels, k=2, fit_mask=mask)
    assert fit.reliability[12] < 0.65 and (fit.reliability[8:12] > 0.85).all()


def test_reliability_em_is_undefined_for_groups_too_small_to_identify() -> None:
    j, _, _ = _planted_arrays()
    labels = np.array([0] * 11 + [1] * 2)
    fit = core.group_reliability_em(j, labels=labels, k=2)
    assert np.isnan(fit.reliability[11:]).all() and np.isfinite(fit.reliability[:11]).all()


def test_ties_carry_no_side_in_the_reliability_em() -> None:
    j, labels, _ = _planted_arrays()
    outcome = j.outcome.copy()
    outcome[j.annotator == 0] = 0.5
    tied = core.Judgments(j.annotator, j.pair, outcome, j.n_annotators, j.n_pairs)
    fit = core.group_reliability_em(tied, labels=labels, k=2)
    assert fit.evidence[0] == 0 and np.isnan(fit.reliability[0]) and fit.reliability[1] > 0.85


def test_latent_weights_map_to_a_line_a_triangle_or_principal_components() -> None:
    two = np.array([[1.0, 0.0], [0.25, 0.75], [np.nan, np.nan]])
    coords, kind, explained = core.latent_weight_coordinates(two)
    assert kind == "line" and explained == [] and coords[:2, 0].tolist() == [0.0, 0.75]
    assert np.isnan(coords[2]).all() and (np.abs(coords[:2, 1]) <= 0.3).all()

    three = np.vstack([np.eye(3), np.full((1, 3), 1 / 3)])
    coords, kind, _ = core.latent_weight_coordinates(three)
    assert kind == "simplex"
    np.testing.assert_allclose(coords[:3], core.SIMPLEX_CORNERS)
    np.testing.assert_allclose(coords[3], core.SIMPLEX_CORNERS.mean(axis=0))  # an even mix sits in the centre

    rng = np.random.default_rng(0)
    four = rng.dirichlet(np.ones(4), size=20)
    coords, kind, explained = core.latent_weight_coordinates(four)
    assert kind == "pca" and len(explained) == 2 and explained[0] >= explained[1] > 0
    assert np.isfinite(coords).all()
