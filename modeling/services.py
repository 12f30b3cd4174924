"""Writes of the modeling app: requesting and running training runs, and predicting from the current model.

torch is imported inside the functions that train or score, never at module level: the web
process imports this module for its views and must not load torch at start-up (STYLE.md §6).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from annotation.selectors_training import (
    judgments_for_adaptation,
    judgments_for_training,
    participant_ids_by_external_id,
)
from config.task_resend import (  # when a queued run is sent again: shared with export jobs
    RESEND_QUEUED_AFTER,  # noqa: F401 (read here by callers and tests)
    RESEND_UNSENT_AFTER,  # noqa: F401
    task_publish,
    task_resend_claim,
)
from elicitation.models import Study
from elicitation.selectors import prompt_list_with_responses
from modeling.models import ParticipantWeights, StudyModel, TrainingRun
from modeling.pair_scores import pair_scores_refresh_enqueue
from modeling.selectors import training_run_active, training_run_artifact_folder, training_run_current

if TYPE_CHECKING:
    from modeling.core.models import RewardModel
    from modeling.core.training import FitResult

logger = logging.getLogger(__name__)

MAX_GROUPS = 8
# Progress is written to the run row at most this often: the page polls every second.
PROGRESS_WRITE_INTERVAL_S = 0.5
TOP_RESPONSES_PER_GROUP = 5
# A run still "running" this long after it started has lost its worker (the task's hard time
# limit in modeling.tasks is 4 h 5 min); a new request may then fail it and start afresh.
RUNNING_STALE_AFTER = timedelta(hours=5)
DEFAULT_TEST_FRACTION = 0.2
MODEL_CACHE_SIZE = 4

Status = TrainingRun.Status

# Hyper-parameters a researcher may set on a run: name -> (type, lowest, highest). All but two are
# fields of modeling.core.training.TrainConfig (keep in step with it); `test_fraction` is the
# held-out share for the reported metrics and `max_groups` bounds the K search (k_range).
HYPERPARAMETERS: dict[str, tuple[type, float | None, float | None]] = {
    "epochs": (int, 1, 100_000),
    "lr": (float, 1e-6, 10.0),
    "annotator_lr": (float, 1e-6, 10.0),
    "weight_decay": (float, 0.0, 10.0),
    "spread_penalty": (float, 0.0, 100.0),
    "annotator_l2": (float, 0.0, 100.0),
    "latent_dim": (int, 1, 1024),
    "hidden_dim": (int, 1, 8192),
    "dropout": (float, 0.0, 0.9),
    "standardize": (bool, None, None),
    "early_stopping": (bool, None, None),
    "eval_every": (int, 1, 100_000),
    "patience": (int, 1, 100_000),
    "use_prompt": (bool, None, None),
    "val_fraction": (float, 0.05, 0.5),
    "test_fraction": (float, 0.05, 0.5),
    "k_min_gain": (float, 0.0, 1.0),
    "k_se_mult": (float, 0.0, 10.0),
    "min_val_judgments": (int, 1, 10_000_000),
    "max_groups": (int, 1, MAX_GROUPS),
    "seed": (int, 0, 2**31 - 1),
    "num_threads": (int, 1, 256),
}
# Below this many judgments, CPU training uses one thread: a full-batch step on a few thousand
# items takes well under a millisecond, and synchronising threads then dominates (measured on a
# busy 2-core machine: 0.4 ms per step on one thread, 54 ms on two).
SINGLE_THREAD_BELOW = 20_000


class TrainingQueueError(Exception):
    """The training task could not be handed to the broker; the run was marked failed."""


class NoTrainedModelError(Exception):
    """The study has no finished model to predict with."""


class _RunTakenOver(Exception):
    """Another attempt claimed the run (the task was redelivered); this attempt must stop."""


# --- Requesting a run ------------------------------------------------------------------------


def hyperparameters_clean(*, values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validated hyper-parameters (unknown names, wrong types and out-of-range values are refused)."""
    errors: dict[str, str] = {}
    cleaned: dict[str, Any] = {}
    for name, value in (values or {}).items():
        rule = HYPERPARAMETERS.get(name)
        if rule is None:
            errors[name] = f"Unknown hyper-parameter; allowed: {', '.join(sorted(HYPERPARAMETERS))}."
            continue
        kind, low, high = rule
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            errors[name] = f"Must be {'a boolean' if kind is bool else 'an integer' if kind is int else 'a number'}."
        elif low is not None and high is not None and not low <= value <= high:
            errors[name] = f"Must be between {low} and {high}."
        else:
            cleaned[name] = kind(value)
    if errors:
        raise ValidationError(errors)
    return cleaned


def _request_clean(
    *, kind: str, groups: int | None, hyperparameters: Mapping[str, Any] | None
) -> tuple[str, int | None, dict[str, Any]]:
    if kind not in TrainingRun.Kind.values:
        raise ValidationError({"kind": f"Unknown model kind {kind!r}; choose one of {', '.join(TrainingRun.Kind.values)}."})
    if groups is not None and (isinstance(groups, bool) or not isinstance(groups, int) or not 1 <= groups <= MAX_GROUPS):
        raise ValidationError({"groups": f"Groups must be a whole number from 1 to {MAX_GROUPS}, or automatic."})
    # BTL has one reward for everybody: a requested K would be ignored, so none is stored.
    return kind, None if kind == TrainingRun.Kind.BTL else groups, hyperparameters_clean(values=hyperparameters)


def training_run_request(
    *,
    study: Study,
    kind: str = TrainingRun.Kind.PAL_A,
    groups: int | None = None,
    trigger: str = "manual",
    requested_by: AbstractBaseUser | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    enqueue: bool = True,
    keep_if_broker_down: bool = False,
) -> tuple[TrainingRun, bool]:
    """Queue a training run, or return the study's active one: `(run, created)`.

    `groups=None` lets the run choose K. The partial unique constraint `one_active_run_per_study`
    is what guarantees a single active run: two concurrent requests both try the insert and the
    loser gets the winner's run. The task is enqueued after commit. When the broker refuses it,
    the run is marked failed and TrainingQueueError raised (a researcher asked and is told), or,
    with `keep_if_broker_down` (automatic retraining), the run stays queued and unsent, and a
    later check sends it (`training_run_resend_due`). `enqueue=False` leaves the run queued for
    the caller to execute in-process (`train_reward_model --sync`).
    """
    kind, groups, params = _request_clean(kind=kind, groups=groups, hyperparameters=hyperparameters)
    for _ in range(3):
        try:
            with transaction.atomic():
                run = TrainingRun.objects.create(
                    study=study, kind=kind, groups_requested=groups, hyperparameters=params, trigger=trigger[:20],
                    requested_by=requested_by if requested_by is not None and requested_by.is_authenticated else None,
                    # Counts as the first attempt: no other process resends it while this one sends.
                    enqueue_tried_at=timezone.now() if enqueue else None,
                )
        except IntegrityError:
            active = training_run_active(study=study)
            if active is not None and not _run_fail_if_stale(run=active):
                # A run waiting for a broker that was down goes out now, if it is due.
                training_run_resend_due(study_id=study.pk)
                return active, False
            # The active run finished (or was abandoned) between our insert and our read: try again.
            continue
        if enqueue:
            transaction.on_commit(functools.partial(
                _training_enqueue, run_id=run.pk, keep_if_broker_down=keep_if_broker_down
            ))
        return run, True
    raise IntegrityError(f"Could not queue a training run for study {study.slug}: runs keep colliding.")


def training_run_resend_due(*, study_id: int) -> bool:
    """Send again the study's queued run whose task is not on the broker; True if it was sent.

    Due: never taken by the broker and last tried RESEND_UNSENT_AFTER ago, or taken but still
    queued RESEND_QUEUED_AFTER later (the broker lost it). Of several processes checking at once,
    the one whose compare-and-swap on `enqueue_tried_at` succeeds sends; a run sent twice is
    still trained once (`_run_claim`). One indexed query when nothing is due.
    """
    run_id = task_resend_claim(waiting=TrainingRun.objects.filter(study_id=study_id, status=Status.QUEUED))
    if run_id is None:
        return False  # nothing due, or another process is sending it
    logger.info("Training run %s of study %s was not on the broker; sending it again.", run_id, study_id)
    return _training_enqueue(run_id=run_id, keep_if_broker_down=True)


def _run_fail_if_stale(*, run: TrainingRun) -> bool:
    """Fail a run whose worker must be gone (running far past the task's time limit)."""
    if run.status != Status.RUNNING or run.started_at is None:
        return False
    if timezone.now() - run.started_at < RUNNING_STALE_AFTER:
        return False
    return bool(
        TrainingRun.objects.filter(pk=run.pk, status=Status.RUNNING, attempts=run.attempts).update(
            status=Status.FAILED, finished_at=timezone.now(),
            error="Abandoned: the run was still 'running' long after the task's time limit; its worker was lost.",
        )
    )


def _training_enqueue(*, run_id: int, keep_if_broker_down: bool) -> bool:
    """Publish the run's task; True once the broker has it. See training_run_request for failures."""
    # Imported here: the task module imports this one.
    from modeling.tasks import train_reward_model

    reason = task_publish(send=lambda: train_reward_model.delay(run_id))
    if reason is not None:
        if keep_if_broker_down:
            # Status filter: never overwrite the message of a run a worker took meanwhile.
            TrainingRun.objects.filter(pk=run_id, status=Status.QUEUED, enqueued_at__isnull=True).update(
                progress_message="waiting for the task queue (broker unreachable)"
            )
            logger.warning("Training run %s not yet queued (broker unreachable, will retry): %s", run_id, reason)
            return False
        TrainingRun.objects.filter(pk=run_id, status=Status.QUEUED).update(
            status=Status.FAILED, finished_at=timezone.now(),
            error=f"Could not queue the training task (is the broker running?): {reason}"[:2000],
        )
        raise TrainingQueueError(f"Could not queue training run {run_id}: {reason}")
    # Unconditional on status: a worker may already have claimed it (it never touches this field).
    TrainingRun.objects.filter(pk=run_id).update(enqueued_at=timezone.now())
    if keep_if_broker_down:  # it may have waited: the page should stop saying so
        TrainingRun.objects.filter(pk=run_id, status=Status.QUEUED, progress_message__startswith="waiting").update(
            progress_message=""
        )
    return True


# --- Running a run ---------------------------------------------------------------------------


def training_run_execute(*, run_id: int, redelivered: bool = False) -> TrainingRun:
    """Train a queued run to completion; safe to call again (the task is acks_late and may be redelivered).

    Only a compare-and-swap from `queued` claims the run, so a retry after success does nothing.
    A `running` run is taken over only when the broker redelivered the task (its worker died):
    `attempts` is then incremented and acts as a fencing token - every later write of the older
    attempt (progress, result) filters on its own attempt number and is refused. Any error leaves
    the run `failed` with a message and nothing half-current: the weights, the artifact folder
    and the study's current model are switched in one transaction at the end.
    """
    from modeling.core.data import InsufficientDataError

    attempt = _run_claim(run_id=run_id, redelivered=redelivered)
    run = TrainingRun.objects.select_related("study").get(pk=run_id)
    if attempt is None:
        logger.info("Training run %s is %s; not running it again.", run_id, run.status)
        return run
    started = time.monotonic()
    progress = _progress_writer(run_id=run_id, attempt=attempt)
    try:
        _run_train(run=run, attempt=attempt, progress=progress, started=started)
    except _RunTakenOver:
        logger.warning("Training run %s attempt %s was taken over by a newer attempt; stopping.", run_id, attempt)
        shutil.rmtree(_artifact_partial_folder(run=run, attempt=attempt), ignore_errors=True)
    except Exception as exc:  # reported on the run (and the page) rather than lost in a worker log
        message = str(exc) if isinstance(exc, InsufficientDataError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, InsufficientDataError):
            logger.exception("Training run %s failed.", run_id)
        TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING, attempts=attempt).update(
            status=Status.FAILED, error=message[:5000], progress_message="failed",
            finished_at=timezone.now(), duration_s=time.monotonic() - started,
        )
        shutil.rmtree(_artifact_partial_folder(run=run, attempt=attempt), ignore_errors=True)
    run.refresh_from_db()
    return run


def _run_claim(*, run_id: int, redelivered: bool) -> int | None:
    """Claim the run for one attempt; returns the attempt number, or None if it is not ours to run."""
    row = TrainingRun.objects.filter(pk=run_id).values_list("status", "attempts").first()
    if row is None:
        raise TrainingRun.DoesNotExist(f"No training run {run_id}.")
    status, attempts = row
    if status != Status.QUEUED and not (status == Status.RUNNING and redelivered):
        return None
    claimed = TrainingRun.objects.filter(pk=run_id, status=status, attempts=attempts).update(
        status=Status.RUNNING, attempts=attempts + 1, started_at=timezone.now(), finished_at=None,
        progress=0.0, progress_message="starting", error="",
    )
    return attempts + 1 if claimed else None


def _progress_writer(*, run_id: int, attempt: int) -> Callable[..., None]:
    last_write = 0.0

    def write(fraction: float, message: str, force: bool = False) -> None:
        nonlocal last_write
        now = time.monotonic()
        if not force and now - last_write < PROGRESS_WRITE_INTERVAL_S:
            return
        last_write = now
        updated = TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING, attempts=attempt).update(
            progress=round(min(max(float(fraction), 0.0), 1.0), 4), progress_message=message[:200]
        )
        if not updated:
            raise _RunTakenOver(f"run {run_id} attempt {attempt}")

    return write


def _run_train(*, run: TrainingRun, attempt: int, progress: Callable[..., None], started: float) -> None:
    # Imported here, not at module level: torch stays out of the web process (see module docstring).
    import torch

    from modeling.core.data import validation_split
    from modeling.core.training import evaluate, fit
    from modeling.embedding_cache import embeddings_for_texts
    from modeling.training_data import rows_fingerprint, rows_index

    study = run.study
    params = dict(run.hyperparameters or {})
    model_name = settings.POLYPHONY_EMBEDDING_MODEL
    progress(0.0, "reading judgments", force=True)
    rows = judgments_for_training(study=study)
    data_hash = rows_fingerprint(rows=rows)
    TrainingRun.objects.filter(pk=run.pk, attempts=attempt).update(data_count=len(rows), data_hash=data_hash)
    indexed = rows_index(
        rows=rows, strength_levels=len(study.strength_labels or []), use_prompt=bool(params.get("use_prompt"))
    )
    indexed.check_sufficient()
    progress(0.02, f"embedding {len(indexed.texts)} texts", force=True)
    data = indexed.preference_data(embeddings=embeddings_for_texts(texts=indexed.texts, model_name=model_name))

    seed = int(params.get("seed", 0))
    # A different seed from fit's own K-selection split, which then happens inside `train`.
    train_idx, test_idx = validation_split(data, float(params.get("test_fraction", DEFAULT_TEST_FRACTION)), seed + 7)
    train, test = data.subset(train_idx), data.subset(test_idx)

    if "num_threads" not in params and len(train) < SINGLE_THREAD_BELOW:
        params["num_threads"] = 1
    threads_before = torch.get_num_threads()
    try:
        # Seeded from the run's own seed so a run is reproducible from its hyper-parameters and data
        # (the engine draws e.g. dropout masks from the global generator); fork_rng gives the
        # worker's generator back untouched afterwards.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            main = fit(train, _train_config(run=run, kind=run.kind, params=params),
                       lambda f, m: progress(0.1 + 0.7 * f, f"{run.kind}: {m}"))
            if run.kind == TrainingRun.Kind.BTL:
                baseline = main
            else:
                baseline = fit(train, _train_config(run=run, kind=TrainingRun.Kind.BTL, params=params),
                               lambda f, m: progress(0.8 + 0.12 * f, f"BTL baseline: {m}"))
    finally:
        # fit sets the thread count for the whole process; the next run (or the embedder) gets it back.
        torch.set_num_threads(threads_before)
    progress(0.92, "evaluating on the held-out split", force=True)
    groups = np.argmax(main.annotator_weights, axis=1) if len(main.annotator_weights) else np.zeros(0, int)
    held_out_model = evaluate(main.model, test)
    # The baseline is scored on the same latent groups, so worst-group accuracies compare.
    held_out_btl = evaluate(baseline.model, test, annotator_group=groups)

    progress(0.95, "ranking responses per group", force=True)
    top = _top_responses(study=study, model=main.model, model_name=model_name)
    metrics = _metrics_summary(
        fit_result=main, groups=groups, held_out_model=held_out_model, held_out_btl=held_out_btl,
        ids=data.annotator_ids or [], n_train=len(train), n_test=len(test), top_responses=top,
    )
    progress(0.98, "saving the model", force=True)
    partial = _artifact_partial_folder(run=run, attempt=attempt)
    shutil.rmtree(partial, ignore_errors=True)
    main.model.save(partial)
    (partial / "polyphony.json").write_text(json.dumps(
        {"study": study.slug, "run": run.pk, "kind": run.kind, "k": main.k, "data_count": len(rows),
         "data_hash": data_hash, "embedding_model": model_name,
         "held_out": metrics["held_out"]},
        indent=2, allow_nan=False,
    ))
    counts = np.bincount(data.annotator_idx, minlength=data.n_annotators)
    _run_finish(
        run=run, attempt=attempt, fit_result=main, metrics=metrics, partial=partial,
        annotator_ids=[str(a) for a in data.annotator_ids or []], judgment_counts=counts, started=started,
    )


def _train_config(*, run: TrainingRun, kind: str, params: dict[str, Any]) -> Any:
    from modeling.core.training import TrainConfig

    known = {k: v for k, v in params.items() if k not in {"test_fraction", "max_groups"}}
    config = TrainConfig(kind=kind, k=run.groups_requested or "auto", embedding_model=settings.POLYPHONY_EMBEDDING_MODEL,
                         **known)
    if "max_groups" in params:
        config.k_range = (1, int(params["max_groups"]))
    return config


def _artifact_folder(*, run: TrainingRun) -> Path:
    """MEDIA_ROOT/models/<study slug>/run-<id>/: the folder `RewardModel.load` reads, without Django."""
    return Path(settings.MEDIA_ROOT) / "models" / run.study.slug / f"run-{run.pk}"


def _artifact_partial_folder(*, run: TrainingRun, attempt: int) -> Path:
    final = _artifact_folder(run=run)
    return final.with_name(f"{final.name}.attempt-{attempt}.partial")


def _run_finish(
    *, run: TrainingRun, attempt: int, fit_result: FitResult, metrics: dict[str, Any], partial: Path,
    annotator_ids: list[str], judgment_counts: np.ndarray, started: float,
) -> None:
    """Mark done, store weights, move the artifact into place and make it current, all or nothing."""
    participant_ids = participant_ids_by_external_id(study=run.study, external_ids=annotator_ids)
    weights = fit_result.annotator_weights
    rows = [
        ParticipantWeights(
            run_id=run.pk, participant_id=participant_ids[external_id],
            weights=[round(float(x), 6) for x in weights[i]], group=int(np.argmax(weights[i])),
            n_judgments=int(judgment_counts[i]),
        )
        # A participant who withdrew since the snapshot has no row to point at: left out.
        for i, external_id in enumerate(annotator_ids) if external_id in participant_ids
    ]
    final = _artifact_folder(run=run)
    with transaction.atomic():
        done = TrainingRun.objects.filter(pk=run.pk, status=Status.RUNNING, attempts=attempt).update(
            status=Status.DONE, progress=1.0, progress_message="done", metrics=metrics,
            groups_chosen=fit_result.k, device=fit_result.device[:40], finished_at=timezone.now(),
            duration_s=time.monotonic() - started,
            artifact_path=str(final.relative_to(Path(settings.MEDIA_ROOT))),
        )
        if not done:
            raise _RunTakenOver(f"run {run.pk} attempt {attempt}")
        ParticipantWeights.objects.filter(run_id=run.pk).delete()
        ParticipantWeights.objects.bulk_create(rows, batch_size=1000)
        StudyModel.objects.get_or_create(study_id=run.study_id)
        # Compare-and-swap: a run never replaces a newer run's model.
        became_current = StudyModel.objects.filter(study_id=run.study_id).filter(
            Q(current_run__isnull=True) | Q(current_run_id__lt=run.pk)
        ).update(current_run_id=run.pk, updated_at=timezone.now())
        if became_current:
            # Active serving reads cached pair probabilities of the current run (modeling.serving).
            transaction.on_commit(functools.partial(pair_scores_refresh_enqueue, run_id=run.pk))
        # Renamed inside the transaction, after the compare-and-swap: only the attempt that won
        # moves its folder into place, and a failed commit leaves no "done" run without files.
        # A rename is one metadata operation, not the slow I/O kept out of transactions.
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)


def _top_responses(*, study: Study, model: RewardModel, model_name: str) -> list[list[dict[str, Any]]]:
    """For each latent group, the study's responses its prototype scores highest."""
    from modeling.embedding_cache import embeddings_for_texts

    items = [(prompt.text, response.text) for prompt in prompt_list_with_responses(study=study)
             for response in prompt.responses.all()]
    if not items:
        return [[] for _ in range(model.k)]
    responses = embeddings_for_texts(texts=[r for _, r in items], model_name=model_name)
    prompts = embeddings_for_texts(texts=[p for p, _ in items], model_name=model_name) if model.net.use_prompt else None
    scores = model.prototype_scores(responses, prompts)
    top: list[list[dict[str, Any]]] = []
    for k in range(model.k):
        order = np.argsort(-scores[:, k], kind="stable")[:TOP_RESPONSES_PER_GROUP]
        top.append([{"prompt": items[i][0], "response": items[i][1], "score": float(scores[i, k])} for i in order])
    return top


def _metrics_summary(
    *, fit_result: FitResult, groups: np.ndarray, held_out_model: dict[str, Any], held_out_btl: dict[str, Any],
    ids: list[Any], n_train: int, n_test: int, top_responses: list[list[dict[str, Any]]],
) -> dict[str, Any]:
    """The run's metrics as JSON-safe data (annotators by external id; NaN/inf become null)."""

    def by_external_id(summary: dict[str, Any]) -> dict[str, Any]:
        per = summary.get("per_annotator_accuracy") or {}
        return {**summary, "per_annotator_accuracy": {str(ids[int(i)]): acc for i, acc in per.items()}}

    train = fit_result.metrics.get("train", {})
    return json_safe({
        "kind": fit_result.model.kind,
        "k": fit_result.k,
        "device": fit_result.device,
        "n_train": n_train,
        "n_test": n_test,
        "n_annotators": len(ids),
        "group_sizes": {str(g): int(n) for g, n in enumerate(np.bincount(groups, minlength=fit_result.k))},
        "held_out": {"model": by_external_id(held_out_model), "btl": by_external_id(held_out_btl)},
        "train": {key: train.get(key) for key in ("accuracy", "log_loss", "ece", "worst_group_accuracy")},
        "k_selection": fit_result.k_selection,
        "train_seconds": fit_result.train_seconds,
        "top_responses": top_responses,
    })


def json_safe(value: Any) -> Any:
    """Plain JSON data from metrics: NumPy scalars unwrapped, keys as strings, NaN and inf as None."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


# --- Predicting --------------------------------------------------------------------------------

PREDICTION_FIELDS: tuple[str, ...] = ("annotator", "prompt", "response_a", "response_b")


@dataclass(frozen=True)
class PredictionItem:
    annotator: str
    prompt: str
    response_a: str
    response_b: str


def prediction_item_parse(*, data: object) -> PredictionItem:
    """One prediction request; raises ValueError with a message meant for the person who wrote it."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object with {', '.join(PREDICTION_FIELDS)}")
    missing = [name for name in PREDICTION_FIELDS if name not in data]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    for name in PREDICTION_FIELDS:
        if not isinstance(data[name], str):
            raise ValueError(f"{name} must be a string")
    for name in ("response_a", "response_b"):
        if not data[name].strip():
            raise ValueError(f"{name} must not be empty")
    return PredictionItem(**{name: data[name] for name in PREDICTION_FIELDS})


_models: OrderedDict[tuple[str, float], RewardModel] = OrderedDict()
_models_lock = threading.Lock()


def _model_load(*, folder: Path) -> RewardModel:
    """The saved model of a folder, kept in a small per-process cache (loading costs ~10 ms-1 s)."""
    from modeling.core.models import RewardModel

    key = (str(folder), (folder / "weights.pt").stat().st_mtime)
    with _models_lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
    model = RewardModel.load(folder)
    with _models_lock:
        _models[key] = model
        while len(_models) > MODEL_CACHE_SIZE:
            _models.popitem(last=False)
    return model


def preferences_predict(*, study: Study, items: Sequence[PredictionItem]) -> list[float]:
    """P(annotator prefers response_a over response_b | not a tie) for each item, from the current model.

    A training annotator uses their learned weights; one who has judgments in the study but was
    not in the run is fitted on the fly from those judgments with the shared model frozen
    (`RewardModel.adapt_annotator`); anyone else gets the population mixture. Texts go through
    the embedding cache, so unseen ones are embedded once. Raises NoTrainedModelError.
    """
    run = training_run_current(study=study)
    if run is None:
        raise NoTrainedModelError(f"Study {study.slug!r} has no trained model yet; train one first.")
    folder = training_run_artifact_folder(run=run)
    if folder is None:
        raise NoTrainedModelError(
            f"The files of run {run.pk}, the current model of study {study.slug!r}, are missing; train again."
        )
    if not items:
        return []
    from modeling.embedding_cache import embeddings_for_texts

    model = _model_load(folder=folder)
    weights = _annotator_weights(study=study, model=model, annotators=[item.annotator for item in items])
    texts = [item.response_a for item in items] + [item.response_b for item in items]
    emb = embeddings_for_texts(texts=texts, model_name=model.embedding_model)
    n = len(items)
    prompt_emb = None
    if model.net.use_prompt:
        prompt_emb = embeddings_for_texts(texts=[item.prompt for item in items], model_name=model.embedding_model)
    w = np.stack([weights[item.annotator] for item in items])
    probs = model.prob_pairs(emb[:n], emb[n:], weights=w, prompt_emb=prompt_emb)
    return [float(p) if math.isfinite(float(p)) else 0.5 for p in probs]


def _annotator_weights(*, study: Study, model: RewardModel, annotators: list[str]) -> dict[str, np.ndarray]:
    """Mixture weights per annotator: learned, adapted from their judgments, or the population's."""
    from modeling.embedding_cache import embeddings_for_texts
    from modeling.training_data import CHOICE_CODES, strength_weight

    known = {str(a) for a in model.annotator_ids}
    wanted = list(dict.fromkeys(annotators))
    weights = {a: model.weights_for(a) for a in wanted if a in known}
    unseen = [a for a in wanted if a not in known]
    history = judgments_for_adaptation(study=study, external_ids=unseen) if unseen and model.k > 1 else {}
    levels = len(study.strength_labels or [])
    for annotator in unseen:
        rows = history.get(annotator, [])
        if not rows:
            weights[annotator] = model.population_weights
            continue
        emb = embeddings_for_texts(texts=[r[1] for r in rows] + [r[2] for r in rows], model_name=model.embedding_model)
        prompt_emb = None
        if model.net.use_prompt:
            prompt_emb = embeddings_for_texts(texts=[r[0] for r in rows], model_name=model.embedding_model)
        weights[annotator] = model.adapt_annotator(
            emb[:len(rows)], emb[len(rows):], np.array([CHOICE_CODES[r[3]] for r in rows]), prompt_emb=prompt_emb,
            weight=np.array([strength_weight(strength=r[4], levels=levels) for r in rows]),
        )
    return weights
