"""The pair-score refresh after a retrain: shapes, what the prototypes say, the task, and the --sync command."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.core.management import call_command

from annotation.models import Participant
from elicitation.models import Pair
from modeling.models import PairScores, TrainingRun
from modeling.pair_scores import PairScoresUnavailable, pair_scores_refresh
from modeling.tasks import refresh_pair_scores
from tests.factories import PromptFactory, ResponseFactory, pair_create

pytestmark = pytest.mark.django_db


def test_refresh_stores_one_probability_per_pool_pair_and_prototype(trained):
    planted, run = trained
    prompt = PromptFactory(study=planted.study)
    good, bad = ResponseFactory(prompt=prompt), ResponseFactory(prompt=prompt)
    pair_create(prompt=prompt, first=good, second=bad, is_attention_check=True, correct_response=good)
    scores = pair_scores_refresh(run_id=run.pk)
    pool = list(Pair.objects.filter(study=planted.study, is_attention_check=False).order_by("id"))
    assert run.groups_chosen == 2 and (scores.n_pairs, scores.k) == (len(pool), 2)
    ids = np.frombuffer(bytes(scores.pair_ids), dtype="<i8")
    assert ids.tolist() == [p.pk for p in pool]
    assert np.frombuffer(bytes(scores.prompt_ids), dtype="<i8").tolist() == [p.prompt_id for p in pool]
    probs = np.frombuffer(bytes(scores.proto_probs), dtype="<f4").reshape(scores.n_pairs, scores.k)
    assert ((probs > 0) & (probs < 1)).all()
    assert len(scores.prior) == 2 and abs(sum(scores.prior) - 1) < 1e-6
    # Every planted pair is formal against casual: the two prototypes disagree on it.
    formal = {r.pk for r in planted.formal}
    formal_first = np.array([p.response_a_id in formal for p in pool])
    p_formal = np.where(formal_first[:, None], probs, 1 - probs)  # P(formal wins | prototype)
    assert np.abs(p_formal[:, 0] - p_formal[:, 1]).mean() > 0.3


def test_refresh_stores_the_particles_of_information_gain(trained):
    # The training annotators' weight vectors plus the K prototypes, with the adaptation's prior, and
    # P(a ≻ b) of every pool pair under each: a pure-prototype particle reproduces that prototype.
    from modeling.core.models import RewardModel
    from modeling.selectors import training_run_artifact_folder

    _, run = trained
    scores = pair_scores_refresh(run_id=run.pk)
    model = RewardModel.load(training_run_artifact_folder(run=run))
    particles = np.array(scores.particles)
    m = model.annotator_weights.shape[0] + 2
    assert particles.shape == (m, 2) and np.allclose(particles[:-2], model.annotator_weights, atol=1e-6)
    assert particles[-2:].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert sum(scores.particle_prior) == pytest.approx(1.0) and scores.particle_prior[-1] == pytest.approx(0.025)
    matrix = np.frombuffer(bytes(scores.particle_probs), dtype="<f4").reshape(scores.n_pairs, m)
    probs = np.frombuffer(bytes(scores.proto_probs), dtype="<f4").reshape(scores.n_pairs, 2)
    assert np.allclose(matrix[:, -2:], probs, atol=1e-6)
    assert (scores.tie_nu is None) == (model.log_nu is None)


def test_refresh_again_replaces_the_row(trained):
    _, run = trained
    pair_scores_refresh(run_id=run.pk)
    pair_scores_refresh(run_id=run.pk)
    assert PairScores.objects.filter(run=run).count() == 1


def test_refresh_task_of_a_run_without_files_logs_and_stores_nothing(trained, caplog):
    _, run = trained
    shutil.rmtree(Path(settings.MEDIA_ROOT) / run.artifact_path)
    with pytest.raises(PairScoresUnavailable):
        pair_scores_refresh(run_id=run.pk)
    with caplog.at_level(logging.WARNING, logger="modeling.tasks"):
        assert refresh_pair_scores.apply(args=[run.pk]).get() == 0
    assert "no saved model" in caplog.text and not PairScores.objects.exists()


def test_a_run_becoming_current_queues_the_refresh(planted, django_capture_on_commit_callbacks, monkeypatch):
    import modeling.services
    from tests.modeling.conftest import run_sync

    queued: list[int] = []
    # Only the enqueueing is replaced: the broker of this test process is kombu's in-memory one.
    monkeypatch.setattr(modeling.services, "pair_scores_refresh_enqueue", lambda *, run_id: queued.append(run_id))
    with django_capture_on_commit_callbacks(execute=True):
        run = run_sync(study=planted.study)
    assert run.status == TrainingRun.Status.DONE and queued == [run.pk]


def test_train_command_with_sync_computes_pair_scores(planted, capsys):
    call_command("train_reward_model", planted.study.slug, "--sync", "--groups", "2",
                 "--hyperparameters", json.dumps({"epochs": 60, "hidden_dim": 32, "latent_dim": 8}))
    run_id = json.loads(capsys.readouterr().out)["run"]
    scores = PairScores.objects.get(run_id=run_id)
    assert scores.n_pairs == Pair.objects.filter(study=planted.study).count() and scores.k == 2
    assert Participant.objects.filter(study=planted.study).exists()
