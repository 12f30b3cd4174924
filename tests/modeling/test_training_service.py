"""Training runs through the service, synchronously, on real database rows and the real embedder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from annotation.models import Judgment, Participant
from modeling.core.metrics import adjusted_rand_index
from modeling.core.models import RewardModel
from modeling.models import ParticipantWeights, StudyModel, TrainingRun
from modeling.services import training_run_execute, training_run_request
from tests.factories import ParticipantFactory, StudyFactory
from tests.modeling.conftest import FAST, PlantedStudy, run_sync

pytestmark = pytest.mark.django_db


def test_two_group_model_beats_btl_on_held_out_judgments(trained: tuple[PlantedStudy, TrainingRun]) -> None:
    planted, run = trained
    held_out = run.metrics["held_out"]
    assert run.groups_chosen == 2 and run.device == "cpu"
    assert run.data_count == Judgment.objects.filter(study=planted.study).count() == 144
    assert run.metrics["n_train"] + run.metrics["n_test"] == 144
    assert held_out["model"]["accuracy"] >= 0.75
    # Opposite tastes cancel out for one shared reward: BTL is near chance, far below.
    assert held_out["model"]["accuracy"] - held_out["btl"]["accuracy"] >= 0.2
    assert held_out["model"]["worst_group_accuracy"] > held_out["btl"]["worst_group_accuracy"]
    for key in ("log_loss", "ece", "per_annotator_accuracy", "per_group_accuracy"):
        assert key in held_out["model"] and key in held_out["btl"]
    assert set(held_out["model"]["per_annotator_accuracy"]) <= set(planted.group_of)
    json.dumps(run.metrics, allow_nan=False)  # NaN/inf never reach the stored metrics


def test_learned_groups_recover_the_planted_ones(trained: tuple[PlantedStudy, TrainingRun]) -> None:
    planted, run = trained
    weights = list(ParticipantWeights.objects.filter(run=run).select_related("participant"))
    assert len(weights) == 12
    assert all(len(w.weights) == 2 and abs(sum(w.weights) - 1) < 1e-4 for w in weights)
    truth = [planted.group_of[w.participant.external_id] for w in weights]
    assert adjusted_rand_index(np.array(truth), np.array([w.group for w in weights])) >= 0.5
    sizes = run.metrics["group_sizes"]
    assert sum(sizes.values()) == 12 and set(sizes) == {"0", "1"}


def test_each_group_ranks_its_own_style_highest(trained: tuple[PlantedStudy, TrainingRun]) -> None:
    planted, run = trained
    formal = {r.text for r in planted.formal}
    top = run.metrics["top_responses"]
    assert len(top) == 2 and all(len(group) == 5 for group in top)
    formal_share = [sum(item["response"] in formal for item in group[:3]) / 3 for group in top]
    # One group's favourites are mostly formal, the other's mostly casual.
    assert max(formal_share) >= 2 / 3 and min(formal_share) <= 1 / 3


def test_finished_run_becomes_current_and_its_folder_loads_without_django(
    trained: tuple[PlantedStudy, TrainingRun],
) -> None:
    planted, run = trained
    assert StudyModel.objects.get(study=planted.study).current_run_id == run.pk
    folder = Path(settings.MEDIA_ROOT) / run.artifact_path
    assert folder == Path(settings.MEDIA_ROOT) / "models" / planted.study.slug / f"run-{run.pk}"
    assert {p.name for p in folder.iterdir()} == {"config.json", "weights.pt", "polyphony.json"}
    config = json.loads((folder / "config.json").read_text())
    assert config["embedding_model"] == settings.POLYPHONY_EMBEDDING_MODEL and config["k"] == 2
    model = RewardModel.load(folder)
    assert sorted(map(str, model.annotator_ids)) == sorted(planted.group_of)
    assert not list(folder.parent.glob("*.partial"))  # the staging folder was moved into place


def test_progress_reaches_one_and_timings_are_recorded(trained: tuple[PlantedStudy, TrainingRun]) -> None:
    _, run = trained
    assert run.progress == 1.0 and run.progress_message == "done"
    assert run.attempts == 1 and run.duration_s > 0 and run.started_at <= run.finished_at
    assert len(run.data_hash) == 64


def test_same_judgments_give_the_same_data_hash(trained: tuple[PlantedStudy, TrainingRun]) -> None:
    planted, first = trained
    second = run_sync(study=planted.study, kind="btl", groups=None)
    assert second.data_hash == first.data_hash
    Judgment.objects.filter(study=planted.study).order_by("id").first().delete()
    third = run_sync(study=planted.study, kind="btl", groups=None)
    assert third.data_hash != first.data_hash and third.data_count == 143


def test_btl_run_is_its_own_baseline(planted: PlantedStudy) -> None:
    run = run_sync(study=planted.study, kind="btl", groups=None)
    assert run.status == "done" and run.groups_chosen == 1 and run.groups_requested is None
    held_out = run.metrics["held_out"]
    assert held_out["model"]["accuracy"] == held_out["btl"]["accuracy"]


def test_pal_b_trains_too(planted: PlantedStudy) -> None:
    run = run_sync(study=planted.study, kind="pal-b", groups=2)
    assert run.status == "done", run.error
    assert run.metrics["held_out"]["model"]["accuracy"] > run.metrics["held_out"]["btl"]["accuracy"]


def test_automatic_k_finds_the_two_planted_groups(researcher: object) -> None:
    from tests.modeling.conftest import planted_study_create

    planted = planted_study_create(owner=researcher, per_group=10, judgments_each=16, seed=1)
    run = run_sync(study=planted.study, groups=None, max_groups=3, min_val_judgments=20, epochs=100)
    assert run.status == "done", run.error
    assert run.groups_requested is None and run.groups_chosen == 2, run.metrics["k_selection"]
    assert set(run.metrics["k_selection"]["val_ll"]) == {"1", "2", "3"}


def test_strength_weighted_judgments_train(researcher: object) -> None:
    from tests.modeling.conftest import planted_study_create

    planted = planted_study_create(owner=researcher, with_strength=True)
    run = run_sync(study=planted.study)
    assert run.status == "done", run.error


def test_too_few_judgments_fail_with_a_clear_message(researcher: object) -> None:
    study = StudyFactory(owner=researcher)
    run = run_sync(study=study)
    assert run.status == "failed"
    assert "Not enough judgments to train a reward model" in run.error
    assert "got 0 judgments" in run.error
    assert not ParticipantWeights.objects.filter(run=run).exists()
    assert not StudyModel.objects.filter(study=study, current_run__isnull=False).exists()
    assert not (Path(settings.MEDIA_ROOT) / "models" / study.slug).exists() or not any(
        (Path(settings.MEDIA_ROOT) / "models" / study.slug).iterdir()
    )


def test_failed_run_keeps_the_previous_model_current(trained: tuple[PlantedStudy, TrainingRun]) -> None:
    planted, good = trained
    Judgment.objects.filter(study=planted.study).delete()
    bad = run_sync(study=planted.study)
    assert bad.status == "failed"
    assert StudyModel.objects.get(study=planted.study).current_run_id == good.pk


def test_attention_check_judgments_are_not_training_data(planted: PlantedStudy) -> None:
    Judgment.objects.filter(study=planted.study, participant__external_id="formal-0").update(is_attention_check=True)
    run = run_sync(study=planted.study, kind="btl", groups=None)
    assert run.data_count == 144 - 12
    assert not ParticipantWeights.objects.filter(run=run, participant__external_id="formal-0").exists()


def test_a_second_request_returns_the_active_run(planted: PlantedStudy, researcher: object) -> None:
    first, created = training_run_request(study=planted.study, kind="pal-a", groups=2, enqueue=False)
    second, created_again = training_run_request(study=planted.study, kind="btl", requested_by=researcher,
                                                 enqueue=False)
    assert created and not created_again
    assert second.pk == first.pk and second.kind == "pal-a"
    assert TrainingRun.objects.filter(study=planted.study).count() == 1


def test_the_database_refuses_a_second_active_run(planted: PlantedStudy) -> None:
    TrainingRun.objects.create(study=planted.study, status="running")
    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRun.objects.create(study=planted.study, status="queued")


def test_a_new_run_may_start_once_the_previous_one_finished(trained: tuple[PlantedStudy, TrainingRun]) -> None:
    planted, _ = trained
    _, created = training_run_request(study=planted.study, enqueue=False)
    assert created


def test_running_the_task_again_after_success_changes_nothing(trained: tuple[PlantedStudy, TrainingRun]) -> None:
    from modeling.tasks import train_reward_model

    planted, run = trained
    again = train_reward_model.apply(args=[run.pk]).get()
    assert again == "done"
    rerun = training_run_execute(run_id=run.pk, redelivered=True)
    assert rerun.attempts == 1 and rerun.finished_at == run.finished_at and rerun.metrics == run.metrics
    assert ParticipantWeights.objects.filter(run=run).count() == 12


def test_a_run_left_running_by_a_killed_worker_is_redone_on_redelivery(planted: PlantedStudy) -> None:
    run, _ = training_run_request(study=planted.study, groups=2, hyperparameters=FAST, enqueue=False)
    # What a worker killed mid-training leaves behind: claimed, half-way, never finished.
    TrainingRun.objects.filter(pk=run.pk).update(status="running", attempts=1, progress=0.4)
    untouched = training_run_execute(run_id=run.pk)  # an ordinary (not redelivered) duplicate
    assert untouched.status == "running" and untouched.attempts == 1
    redone = training_run_execute(run_id=run.pk, redelivered=True)
    assert redone.status == "done" and redone.attempts == 2, redone.error


def test_an_older_attempt_cannot_finish_a_run_taken_over(planted: PlantedStudy) -> None:
    from modeling import services

    run, _ = training_run_request(study=planted.study, groups=2, hyperparameters=FAST, enqueue=False)
    real_progress = services._progress_writer

    def take_over_midway(*, run_id: int, attempt: int):  # type: ignore[no-untyped-def]
        write = real_progress(run_id=run_id, attempt=attempt)

        def wrapped(fraction: float, message: str, force: bool = False) -> None:
            if fraction >= 0.5:  # a redelivered copy of the task claims the run now
                TrainingRun.objects.filter(pk=run_id).update(attempts=attempt + 1)
            write(fraction, message, force=True)

        return wrapped

    services._progress_writer = take_over_midway
    try:
        result = training_run_execute(run_id=run.pk)
    finally:
        services._progress_writer = real_progress
    assert result.status == "running" and result.attempts == 2
    assert not ParticipantWeights.objects.filter(run=run).exists()
    assert not StudyModel.objects.filter(study=planted.study, current_run=run).exists()


def test_an_older_run_never_replaces_a_newer_current_model(trained: tuple[PlantedStudy, TrainingRun]) -> None:
    planted, older = trained
    newer = run_sync(study=planted.study, kind="btl", groups=None)
    assert StudyModel.objects.get(study=planted.study).current_run_id == newer.pk
    # Re-finishing the older run (as a late duplicate would) must not win the compare-and-swap.
    TrainingRun.objects.filter(pk=older.pk).update(status="queued", attempts=0)
    assert training_run_execute(run_id=older.pk).status == "done"
    assert StudyModel.objects.get(study=planted.study).current_run_id == newer.pk


def test_a_withdrawn_participant_is_left_out_of_the_stored_weights(planted: PlantedStudy) -> None:
    from modeling import services

    real = services.participant_ids_by_external_id

    def after_withdrawal(**kwargs):  # type: ignore[no-untyped-def]
        # The participant withdraws while the model trains (between snapshot and finish).
        Participant.objects.filter(study=planted.study, external_id="casual-0").delete()
        return real(**kwargs)

    services.participant_ids_by_external_id = after_withdrawal
    try:
        run = run_sync(study=planted.study)
    finally:
        services.participant_ids_by_external_id = real
    assert run.status == "done", run.error
    assert ParticipantWeights.objects.filter(run=run).count() == 11


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "gpt"}, "kind"),
        ({"groups": 0}, "groups"),
        ({"groups": 9}, "groups"),
        ({"hyperparameters": {"epochs": 0}}, "epochs"),
        ({"hyperparameters": {"epochs": "many"}}, "epochs"),
        ({"hyperparameters": {"learning_rate": 0.1}}, "learning_rate"),
        ({"hyperparameters": {"use_prompt": 1}}, "use_prompt"),
    ],
)
def test_bad_requests_are_refused_and_nothing_is_written(
    planted: PlantedStudy, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as excinfo:
        training_run_request(study=planted.study, enqueue=False, **kwargs)  # type: ignore[arg-type]
    assert field in excinfo.value.message_dict
    assert not TrainingRun.objects.exists()


def test_a_participant_without_judgments_is_not_in_the_model(planted: PlantedStudy) -> None:
    ParticipantFactory(study=planted.study, external_id="silent")
    run = run_sync(study=planted.study)
    assert not ParticipantWeights.objects.filter(run=run, participant__external_id="silent").exists()


def test_a_run_stuck_running_past_the_time_limit_gives_way_to_a_new_one(planted: PlantedStudy) -> None:
    from datetime import timedelta

    from django.utils import timezone

    stuck = TrainingRun.objects.create(study=planted.study, status="running", attempts=1,
                                       started_at=timezone.now() - timedelta(hours=6))
    run, created = training_run_request(study=planted.study, enqueue=False)
    assert created and run.pk != stuck.pk
    stuck.refresh_from_db()
    assert stuck.status == "failed" and "worker was lost" in stuck.error


def test_a_recently_started_run_is_not_taken_for_stuck(planted: PlantedStudy) -> None:
    from django.utils import timezone

    busy = TrainingRun.objects.create(study=planted.study, status="running", attempts=1, started_at=timezone.now())
    run, created = training_run_request(study=planted.study, enqueue=False)
    assert not created and run.pk == busy.pk


def test_metrics_are_made_json_safe() -> None:
    from modeling.services import json_safe

    cleaned = json_safe({1: np.float32("nan"), "b": [np.inf, -np.inf, np.int64(3), np.bool_(True)],
                         "c": np.array([0.5, np.nan])})
    assert cleaned == {"1": None, "b": [None, None, 3, True], "c": [0.5, None]}
    json.dumps(cleaned, allow_nan=False)


def test_a_run_is_reproducible_from_its_seed_and_data(planted: PlantedStudy) -> None:
    first = run_sync(study=planted.study, seed=5)
    second = run_sync(study=planted.study, seed=5)
    assert first.data_hash == second.data_hash
    assert first.metrics["held_out"] == second.metrics["held_out"]
