"""Active serving (modeling.serving) through annotation's serving: policies on cached pair scores,
the posterior moving after each judgment, no repeats, coverage under `mixed`, and the fallbacks."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pytest
from django.db import connection

from annotation.models import Judgment, Participant, ServedPair
from annotation.services import judgment_submit, pair_serve_next
from elicitation.models import Pair, Study
from modeling import serving
from modeling.core import selection
from modeling.models import PairScores, StudyModel, TrainingRun
from tests.concurrency import race
from tests.factories import ParticipantFactory, PromptFactory, ResponseFactory, StudyFactory, pair_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _seeded_and_cold(monkeypatch: pytest.MonkeyPatch) -> None:
    # A seeded generator for the policies' tie-breaks and `mixed`'s draws; an empty scores cache,
    # since run ids repeat across tests (each test's database starts afresh).
    monkeypatch.setattr(serving, "_rng", np.random.default_rng(0))
    serving._scores.clear()


def test_modeling_registers_its_chooser_for_every_model_policy():
    from annotation.services import PAIR_CHOOSERS

    assert {policy for policy, chooser in PAIR_CHOOSERS.items() if chooser is serving.pair_choose_model} == {
        "uncertainty", "information_gain", "disagreement", "mixed"}


def scores_install(study: Study, probs_of: Callable[[Pair], list[float]], prior: list[float] | None = None,
                   particles: list[list[float]] | None = None, tie_nu: float | None = None) -> PairScores:
    """A finished run made current, with the given per-prototype probabilities for each pool pair
    (and, with `particles`, the particle matrix that the refresh would compute from them)."""
    pairs = list(Pair.objects.filter(study=study, is_attention_check=False).order_by("id"))
    probs = np.array([probs_of(p) for p in pairs], dtype="<f4")
    k = probs.shape[1]
    run = TrainingRun.objects.create(study=study, status=TrainingRun.Status.DONE, groups_chosen=k)
    StudyModel.objects.update_or_create(study=study, defaults={"current_run": run})
    extra: dict[str, object] = {}
    if particles is not None:
        weights, particle_prior = selection.particles_from_weights(np.array(particles))
        logits = np.log(probs.astype(np.float64) / (1 - probs))
        extra = {"particles": weights.tolist(), "particle_prior": particle_prior.tolist(), "tie_nu": tie_nu,
                 "particle_probs": selection.particle_pair_probs(logits, weights).astype("<f4").tobytes()}
    return PairScores.objects.create(
        study=study, run=run, k=k, n_pairs=len(pairs),
        pair_ids=np.array([p.pk for p in pairs], dtype="<i8").tobytes(),
        prompt_ids=np.array([p.prompt_id for p in pairs], dtype="<i8").tobytes(),
        proto_probs=probs.tobytes(), prior=prior or [1.0 / k] * k, **extra,
    )


def _study(policy: str, pairs: int, **fields: object) -> tuple[Study, list[Pair]]:
    study = StudyFactory(selection_policy=policy, strength_labels=[], **fields)
    created = []
    for _ in range(pairs):
        prompt = PromptFactory(study=study)
        created.append(pair_create(prompt=prompt, first=ResponseFactory(prompt=prompt),
                                   second=ResponseFactory(prompt=prompt)))
    return study, created


def _participant(study: Study, external_id: str = "p") -> Participant:
    participant = ParticipantFactory(study=study, external_id=external_id)
    return Participant.objects.select_related("study").get(pk=participant.pk)


def _answer_canonical(participant: Participant, served: ServedPair, prefers: str) -> None:
    """Answer preferring the pair's stored response_a (`prefers="a"`) or response_b, whatever the side shown."""
    wanted = served.pair.response_a_id if prefers == "a" else served.pair.response_b_id
    choice = "a" if served.left_response_id == wanted else "b"
    judgment_submit(participant=participant, served_id=served.id, choice=choice, strength=None, rationale="")


def test_information_gain_serves_the_pair_that_splits_the_prototypes():
    study, pairs = _study("information_gain", 4)
    divisive = pairs[2]
    scores_install(study, lambda p: [0.99, 0.01] if p.pk == divisive.pk else [0.9, 0.88])
    served = pair_serve_next(participant=_participant(study))
    assert served.pair_id == divisive.pk and served.policy == "information_gain"


def _three_prototype_study() -> tuple[Study, dict[str, Pair]]:
    # x splits prototype 0 from 1 and 2; x2 nearly the same; y splits 1 from 2 and leaves 0 indifferent.
    study, pairs = _study("information_gain", 4, judgments_per_participant=4)
    named = dict(zip(["x", "x2", "y", "flat"], pairs, strict=True))
    table = {"x": [0.99, 0.01, 0.01], "x2": [0.98, 0.02, 0.02], "y": [0.5, 0.99, 0.01], "flat": [0.6, 0.6, 0.6]}
    by_pk = {p.pk: table[name] for name, p in named.items()}
    scores_install(study, lambda p: by_pk[p.pk])
    return study, named


@pytest.mark.parametrize(("answer", "expected_next"), [("b", "y"), ("a", "x2")])
def test_the_posterior_moves_after_each_judgment_and_changes_the_next_pair(answer, expected_next):
    study, named = _three_prototype_study()
    participant = _participant(study)
    first = pair_serve_next(participant=participant)
    assert first.pair_id == named["x"].pk
    _answer_canonical(participant, first, answer)
    second = pair_serve_next(participant=participant)
    assert second.pair_id == named[expected_next].pk


def test_a_submission_under_a_model_policy_serves_the_next_pair_with_its_answer_counted():
    study, named = _three_prototype_study()
    participant = _participant(study)
    first = pair_serve_next(participant=participant)
    wanted = first.pair.response_b_id  # the answer that points away from prototype 0
    result = judgment_submit(participant=participant, served_id=first.id, strength=None, rationale="",
                             choice="a" if first.left_response_id == wanted else "b")
    assert result.next_served is not None and result.next_served.pair_id == named["y"].pk
    assert pair_serve_next(participant=participant).id == result.next_served.id  # the next read only reads


@pytest.mark.skipif(connection.vendor != "postgresql", reason="serving inside the submission needs PostgreSQL")
def test_a_submission_under_a_model_policy_chooses_then_stores_and_serves_in_one_statement(
        django_assert_num_queries):
    study, _ = _three_prototype_study()
    participant = _participant(study)
    first = pair_serve_next(participant=participant)
    # The chooser's one read, then the submission statement (in the test's savepoint): no lock, no
    # second transaction, no separate insert.
    with django_assert_num_queries(4):
        result = judgment_submit(participant=participant, served_id=first.id, choice="a", strength=None,
                                 rationale="")
    assert result.next_served is not None and result.next_served.policy == "information_gain"
    assert ServedPair.objects.get(participant=participant, answered_at__isnull=True).pk == result.next_served.id


def test_the_chooser_counts_a_pending_answer_and_declines_one_that_is_not_outstanding():
    from annotation.services import PendingAnswer

    study, named = _three_prototype_study()
    participant = _participant(study)
    first = pair_serve_next(participant=participant)
    away = "a" if first.left_response_id == first.pair.response_b_id else "b"  # away from prototype 0
    pending = PendingAnswer(served_id=first.id, choice=away)
    assert serving.pair_choose_model(participant=participant, pending=pending) == (named["y"].pk, "information_gain")
    result = judgment_submit(participant=participant, served_id=first.id, choice=away, strength=None, rationale="")
    assert result.next_served.pair_id == named["y"].pk
    # Answered now: a resubmission stores nothing, so the chooser does not choose for it.
    assert serving.pair_choose_model(participant=participant, pending=pending) is None
    again = judgment_submit(participant=participant, served_id=first.id, choice=away, strength=None, rationale="")
    assert again.duplicate and again.next_served is None
    assert ServedPair.objects.filter(participant=participant).count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")
def test_racing_submissions_and_page_loads_under_a_model_policy_leave_one_outstanding_pair():
    """The pair chosen before the store is served by the statement whose claim won: resubmissions of
    one served id racing each other and other tabs' page loads store one answer and serve one pair."""
    study, _ = _study("information_gain", 6, judgments_per_participant=4)
    scores_install(study, lambda p: [0.9, 0.2] if p.pk % 2 else [0.3, 0.8], particles=[[0.7, 0.3], [0.2, 0.8]],
                   tie_nu=0.5)
    participant_id = _participant(study).pk
    first = pair_serve_next(participant=Participant.objects.select_related("study").get(pk=participant_id))

    def act(n: int) -> None:
        participant = Participant.objects.select_related("study").get(pk=participant_id)
        if n % 2:
            judgment_submit(participant=participant, served_id=first.id, choice="ab"[n % 4 // 2],
                            strength=None, rationale="")
        else:
            pair_serve_next(participant=participant)

    assert race(act, threads=6) == []
    assert Judgment.objects.filter(participant_id=participant_id).count() == 1
    outstanding = ServedPair.objects.get(participant_id=participant_id, answered_at__isnull=True)
    assert outstanding.policy == "information_gain" and outstanding.pair_id != first.pair_id
    assert Participant.objects.get(pk=participant_id).judgment_count == 1


def test_a_participant_is_never_served_the_same_pair_twice():
    study, pairs = _study("uncertainty", 6, judgments_per_participant=10)
    scores_install(study, lambda p: [0.5, 0.5])  # every pair equally uncertain: only the exclusion decides
    participant = _participant(study)
    served_ids = []
    while (served := pair_serve_next(participant=participant)) is not None:
        served_ids.append(served.pair_id)
        _answer_canonical(participant, served, "a")
    assert sorted(served_ids) == sorted(p.pk for p in pairs)
    assert Participant.objects.get(pk=participant.pk).completed_at is not None


def test_every_judgment_records_the_policy_that_served_it():
    study, _ = _study("disagreement", 3, judgments_per_participant=2)
    scores_install(study, lambda p: [0.9, 0.1])
    participant = _participant(study)
    for _ in range(2):
        _answer_canonical(participant, pair_serve_next(participant=participant), "a")
    assert set(Judgment.objects.values_list("policy", flat=True)) == {"disagreement"}


def test_mixed_policy_brings_every_pair_to_its_overlap_target():
    # Information gain alone would keep serving the two divisive pairs; the coverage share of
    # `mixed` must still give every pool pair its overlap target.
    study, pairs = _study("mixed", 6, judgments_per_participant=2, overlap_target=2)
    favourites = {pairs[0].pk, pairs[1].pk}
    scores_install(study, lambda p: [0.99, 0.01] if p.pk in favourites else [0.7, 0.6])
    for i in range(60):
        participant = _participant(study, f"p{i}")
        while (served := pair_serve_next(participant=participant)) is not None:
            _answer_canonical(participant, served, "a")
    counts = dict(Pair.objects.filter(study=study).values_list("id", "judgment_count"))
    assert min(counts.values()) >= study.overlap_target
    policies = set(Judgment.objects.values_list("policy", flat=True))
    assert policies == {"mixed:coverage", "mixed:info_gain"}


def test_attention_checks_are_still_served_under_an_active_policy():
    study, _ = _study("information_gain", 4, judgments_per_participant=3)
    scores_install(study, lambda p: [0.9, 0.1])
    prompt = PromptFactory(study=study)
    good, bad = ResponseFactory(prompt=prompt), ResponseFactory(prompt=prompt)
    check = pair_create(prompt=prompt, first=good, second=bad, is_attention_check=True, correct_response=good)
    participant = _participant(study)
    served_pairs = []
    while (served := pair_serve_next(participant=participant)) is not None:
        served_pairs.append(served.pair_id)
        _answer_canonical(participant, served, "a")
    assert check.pk in served_pairs and len(served_pairs) == 3


def test_without_a_model_random_serves_quietly(caplog):
    study, _ = _study("information_gain", 3)
    with caplog.at_level(logging.WARNING, logger="modeling.serving"):
        served = pair_serve_next(participant=_participant(study))
    assert served.policy == "random" and not caplog.records


def test_corrupt_pair_scores_fall_back_to_random_and_log_why(caplog):
    study, _ = _study("information_gain", 3)
    scores = scores_install(study, lambda p: [0.9, 0.1])
    PairScores.objects.filter(pk=scores.pk).update(proto_probs=b"\x00" * 7)
    with caplog.at_level(logging.WARNING, logger="modeling.serving"):
        served = pair_serve_next(participant=_participant(study))
    assert served is not None and served.policy == "random"
    assert "fell back to random" in caplog.text and "corrupt" in caplog.text


def test_a_current_model_without_pair_scores_falls_back_to_random_and_logs_why(caplog):
    study, _ = _study("information_gain", 3)
    scores = scores_install(study, lambda p: [0.9, 0.1])
    scores.delete()
    with caplog.at_level(logging.WARNING, logger="modeling.serving"):
        served = pair_serve_next(participant=_participant(study))
    assert served.policy == "random" and "no pair scores" in caplog.text


def test_serving_from_cached_scores_takes_a_bounded_number_of_queries(django_assert_max_num_queries):
    study, _ = _study("mixed", 30)
    scores_install(study, lambda p: [0.8, 0.3])
    participant = _participant(study)
    pair_serve_next(participant=participant)  # warms the process cache of the run's scores
    _answer_canonical(participant, ServedPair.objects.select_related("pair").get(), "a")
    with django_assert_max_num_queries(12):
        assert pair_serve_next(participant=participant) is not None


def _cached(probs: np.ndarray, prior: np.ndarray, particles: np.ndarray | None = None,
            tie_nu: float | None = None) -> serving.CachedScores:
    n = probs.shape[0]
    extra: dict[str, object] = {}
    if particles is not None:
        weights, particle_prior = selection.particles_from_weights(particles)
        matrix = selection.particle_pair_probs(np.log(probs / (1 - probs)), weights)
        extra = {"particle_probs_t": np.ascontiguousarray(matrix.T), "particle_prior": particle_prior,
                 "particle_entropy_t": np.ascontiguousarray(selection.binary_entropy(matrix).T), "tie_nu": tie_nu}
    return serving.CachedScores(run_id=1, pair_ids=np.arange(n), prompt_ids=np.zeros(n, dtype=np.int64),
                                prompt_codes=np.zeros(n, dtype=np.intp), probs=probs, entropy=np.zeros_like(probs),
                                prior=prior, n_prompts=1, **extra)


def test_the_request_posterior_is_exact_bayes_over_the_prototypes():
    rng = np.random.default_rng(3)
    probs = rng.uniform(0.05, 0.95, size=(6, 3))
    cached = _cached(probs, np.array([0.5, 0.3, 0.2]))
    served = [(0, "a"), (2, "b"), (3, "tie"), (5, None)]
    positions = np.array([0, 2, 3, 5])
    expected = cached.prior
    for position, choice in [(0, "a"), (2, "b"), (3, "tie")]:
        expected = selection.posterior_update(expected, probs[position], choice)
    got = serving._posterior(scores=cached, served=served, known=np.ones(4, bool), positions=positions)
    assert np.allclose(got, expected)


def test_the_request_posterior_over_particles_is_the_adaptations_posterior():
    # The same posterior whose mean modeling.core.adapt.posterior_weights returns (Davidson ties).
    from modeling.core.adapt import posterior_weights

    rng = np.random.default_rng(4)
    probs = rng.uniform(0.05, 0.95, size=(8, 3))
    weights = rng.dirichlet(np.ones(3), 12)
    nu = 0.6
    cached = _cached(probs, np.full(3, 1 / 3), particles=weights, tie_nu=nu)
    served = [(0, "a"), (1, "b"), (4, "tie"), (6, "a")]
    got = serving._posterior(scores=cached, served=served, known=np.ones(4, bool), positions=np.array([0, 1, 4, 6]))
    particles, _ = selection.particles_from_weights(weights)
    logits = np.log(probs / (1 - probs))[[0, 1, 4, 6]]
    expected_mean = posterior_weights(logits, np.array([0, 1, 2, 0]), weights, log_nu=np.log(nu))
    assert np.allclose(got @ particles, expected_mean, atol=1e-5)


def test_information_gain_over_particles_keeps_asking_once_the_prototype_is_known():
    # Prototype 0 is certain for everyone (the particles all lean to it), so prototype-level gain
    # is ~0 on every pair; the particles (0.9/0.1 against 0.6/0.4) still disagree on `y`.
    study, pairs = _study("information_gain", 3, judgments_per_participant=3)
    named = dict(zip(["flat", "y", "agree"], pairs, strict=True))
    sig = {"flat": [0.95, 0.95], "y": [1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(4.0))], "agree": [0.2, 0.2]}
    by_pk = {p.pk: sig[name] for name, p in named.items()}
    scores_install(study, lambda p: by_pk[p.pk], prior=[0.999, 0.001], particles=[[0.9, 0.1]] * 5 + [[0.6, 0.4]] * 5)
    served = pair_serve_next(participant=_participant(study))
    assert served.pair_id == named["y"].pk and served.policy == "information_gain"


@pytest.mark.parametrize("policy", ["uncertainty", "information_gain", "disagreement", "mixed"])
def test_every_model_policy_serves_from_particle_scores_before_and_after_an_answer(policy, caplog):
    study, _ = _study(policy, 4, judgments_per_participant=3)
    scores_install(study, lambda p: [0.9, 0.2] if p.pk % 2 else [0.4, 0.7], particles=[[0.7, 0.3], [0.2, 0.8]],
                   tie_nu=0.4)
    participant = _participant(study)
    with caplog.at_level(logging.WARNING, logger="modeling.serving"):
        first = pair_serve_next(participant=participant)
        _answer_canonical(participant, first, "a")
        second = pair_serve_next(participant=participant)
    assert not caplog.records
    assert {first.policy, second.policy} <= {policy, "mixed:coverage", "mixed:info_gain"}


def test_pair_scores_without_particles_still_serve_over_the_prototypes():
    study, pairs = _study("information_gain", 3)
    scores_install(study, lambda p: [0.99, 0.01] if p.pk == pairs[1].pk else [0.8, 0.8])
    assert PairScores.objects.get(study=study).particle_prior == []
    assert pair_serve_next(participant=_participant(study)).pair_id == pairs[1].pk


def test_the_participant_api_under_information_gain_serves_each_pair_once_and_reads_after_a_submit(
        api_client, researcher):
    # The whole flow through the participant API: the POST chooses the next pair (the answer counted),
    # the GET that follows only reads it.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    study, pairs = _study("information_gain", 5, judgments_per_participant=4, owner=researcher)
    scores_install(study, lambda p: [0.9, 0.2] if p.pk % 2 else [0.3, 0.8], particles=[[0.7, 0.3], [0.2, 0.8]],
                   tie_nu=0.5)
    token = api_client.post(f"/api/v1/studies/{study.slug}/participants", {"external_id": "sim"},
                            format="json").json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    served = []
    body = client.get("/api/v1/participant/next").json()
    while True:
        served.append(body["served_id"])
        stored = client.post("/api/v1/participant/judgments", {"served_id": body["served_id"], "choice": "tie"},
                             format="json")
        assert stored.status_code == 201
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/api/v1/participant/next")
        if response.status_code == 204:
            break
        assert len(queries) <= 2, [q["sql"] for q in queries]  # token, outstanding pair: no choosing here
        body = response.json()
    pair_ids = list(ServedPair.objects.filter(participant__study=study).values_list("pair_id", flat=True))
    assert len(served) == 4 and len(set(pair_ids)) == 4
    assert set(Judgment.objects.values_list("policy", flat=True)) == {"information_gain"}


@pytest.mark.parametrize(("epsilon", "expected"), [(0.0, {"mixed:info_gain"}), (1.0, {"mixed:coverage"})])
def test_mixed_serves_coverage_with_the_studys_own_share(epsilon, expected):
    study, _ = _study("mixed", 8, judgments_per_participant=4, mixed_epsilon=epsilon)
    scores_install(study, lambda p: [0.9, 0.1] if p.pk % 2 else [0.6, 0.5])
    for i in range(3):
        participant = _participant(study, f"p{i}")
        while (served := pair_serve_next(participant=participant)) is not None:
            _answer_canonical(participant, served, "a")
    assert set(Judgment.objects.values_list("policy", flat=True)) == expected


def test_consistency_repeats_are_served_under_a_model_policy_too():
    study, pairs = _study("information_gain", 8, judgments_per_participant=6, consistency_repeats=2)
    scores_install(study, lambda p: [0.9, 0.1] if p.pk % 2 else [0.6, 0.5])
    participant = _participant(study)
    served_pairs = []
    while (served := pair_serve_next(participant=participant)) is not None:
        served_pairs.append((served.pair_id, served.policy))
        _answer_canonical(participant, served, "a")
    repeats = [pair_id for pair_id, policy in served_pairs if policy == "consistency_repeat"]
    firsts = [pair_id for pair_id, policy in served_pairs if policy != "consistency_repeat"]
    assert len(served_pairs) == 6 and len(repeats) == 2
    assert len(set(firsts)) == len(firsts) and set(repeats) <= set(firsts)
