"""Train a study's reward model and print the run's metrics as JSON.

    python manage.py train_reward_model STUDY [--kind btl|pal-a|pal-b] [--groups K|auto] [--sync]

Without --sync the run is queued for a training worker and the command waits for it, polling
the run row; with --sync it trains in this process. Exits non-zero with the run's error (for
instance "Not enough judgments…") when it fails.
"""

from __future__ import annotations

import json
import time
from argparse import ArgumentParser, ArgumentTypeError
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from elicitation.models import Study
from modeling.models import TrainingRun
from modeling.pair_scores import pair_scores_refresh
from modeling.selectors import study_current_run_id, study_get_by_slug
from modeling.services import MAX_GROUPS, TrainingQueueError, training_run_execute, training_run_request


def _groups(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        groups = int(value)
    except ValueError:
        groups = 0
    if not 1 <= groups <= MAX_GROUPS:
        raise ArgumentTypeError(f"must be 'auto' or a whole number from 1 to {MAX_GROUPS}, got {value!r}")
    return groups


def _json_object(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ArgumentTypeError("must be a JSON object, e.g. '{\"epochs\": 200}'")
    return parsed


class Command(BaseCommand):
    help = "Train a study's reward model (BTL, PAL-A or PAL-B) and print its held-out metrics as JSON."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("study", help="The study's slug.")
        parser.add_argument("--kind", choices=TrainingRun.Kind.values, default=TrainingRun.Kind.PAL_A)
        parser.add_argument("--groups", type=_groups, default=None, metavar="K|auto",
                            help="Number of latent groups, or 'auto' (default) to choose it on held-out data.")
        parser.add_argument("--sync", action="store_true", help="Train in this process instead of a worker.")
        parser.add_argument("--timeout", type=float, default=3600.0,
                            help="Seconds to wait for a worker's run (default 3600). The run itself continues.")
        parser.add_argument("--poll-interval", type=float, default=1.0, help="Seconds between checks of the run (default 1).")
        parser.add_argument("--epochs", type=int, default=None, help="Training epochs (default: the engine's).")
        parser.add_argument("--hyperparameters", type=_json_object, default=None,
                            help="More hyper-parameters as a JSON object, e.g. '{\"max_groups\": 4, \"seed\": 1}'.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            study = study_get_by_slug(slug=options["study"])
        except Study.DoesNotExist as exc:
            raise CommandError(f"No study with slug {options['study']!r}.") from exc
        params = dict(options["hyperparameters"] or {})
        if options["epochs"] is not None:
            params["epochs"] = options["epochs"]
        try:
            run, created = training_run_request(
                study=study, kind=options["kind"], groups=options["groups"], trigger="command",
                hyperparameters=params, enqueue=not options["sync"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        except TrainingQueueError as exc:
            raise CommandError(f"{exc} Start the broker, or train in this process with --sync.") from exc
        if not created:
            if options["sync"]:
                raise CommandError(
                    f"Run {run.pk} ({run.kind}) is already {run.status} for study {study.slug}; a study trains one "
                    "model at a time. Wait for it, or run this command without --sync to wait and print its metrics."
                )
            self.stderr.write(f"Run {run.pk} ({run.kind}) is already {run.status} for this study; waiting for it.")
        if options["sync"]:
            run = training_run_execute(run_id=run.pk)
        else:
            run = self._wait(run=run, timeout=options["timeout"], interval=options["poll_interval"])
        if run.status != TrainingRun.Status.DONE:
            raise CommandError(f"Training run {run.pk} failed: {run.error}")
        if options["sync"] and study_current_run_id(study_id=study.pk) == run.pk:
            # In-process too: active serving needs the run's pair scores (a worker may not be running).
            pair_scores_refresh(run_id=run.pk)
        self.stdout.write(json.dumps(_summary(run=run), indent=2, ensure_ascii=False, allow_nan=False))

    def _wait(self, *, run: TrainingRun, timeout: float, interval: float) -> TrainingRun:
        deadline = time.monotonic() + timeout
        shown = None
        while True:
            run.refresh_from_db()
            if run.status in (TrainingRun.Status.DONE, TrainingRun.Status.FAILED):
                return run
            state = (run.status, run.progress_message, round(run.progress, 2))
            if state != shown:
                self.stderr.write(f"run {run.pk}: {run.status} {run.progress:.0%} {run.progress_message}")
                shown = state
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"Timed out after {timeout:g} s waiting for training run {run.pk} (still {run.status}); "
                    "it goes on in the background. Is a worker consuming the 'training' queue?"
                )
            time.sleep(interval)


def _summary(*, run: TrainingRun) -> dict[str, Any]:
    return {
        "run": run.pk,
        "study": run.study.slug,
        "kind": run.kind,
        "groups": run.groups_chosen,
        "device": run.device,
        "duration_s": run.duration_s,
        "data_count": run.data_count,
        "data_hash": run.data_hash,
        "model_folder": str(Path(settings.MEDIA_ROOT) / run.artifact_path),
        "metrics": run.metrics,
    }
