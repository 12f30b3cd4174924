"""Predict, for each line of a JSONL file, the probability that its annotator prefers response_a.

    python manage.py predict_preferences STUDY PAIRS.jsonl -o OUT.jsonl

Each input line: {"annotator": str, "prompt": str, "response_a": str, "response_b": str}; each
output line is the same object plus "p_a". Every line is checked before anything is predicted:
a bad line stops the command with `line N: …` and no output file is written.
"""

from __future__ import annotations

import json
import os
import tempfile
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from elicitation.models import Study
from modeling.selectors import study_get_by_slug
from modeling.services import NoTrainedModelError, PredictionItem, prediction_item_parse, preferences_predict

MAX_ERRORS_SHOWN = 20


class Command(BaseCommand):
    help = "Predict P(annotator prefers response_a) for each line of a JSONL file with the study's current model."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("study", help="The study's slug.")
        parser.add_argument("pairs", type=Path, help="JSONL input: annotator, prompt, response_a, response_b.")
        parser.add_argument("-o", "--output", type=Path, required=True, help="JSONL output (the input lines plus p_a).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            study = study_get_by_slug(slug=options["study"])
        except Study.DoesNotExist as exc:
            raise CommandError(f"No study with slug {options['study']!r}.") from exc
        records, items = _read(path=options["pairs"])
        try:
            probabilities = preferences_predict(study=study, items=items)
        except NoTrainedModelError as exc:
            raise CommandError(str(exc)) from exc
        _write(path=options["output"], records=records, probabilities=probabilities)
        self.stderr.write(f"Wrote {len(records)} prediction{'s' if len(records) != 1 else ''} to {options['output']}.")


def _read(*, path: Path) -> tuple[list[dict[str, Any]], list[PredictionItem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"Cannot read {path}: {exc}") from exc
    records: list[dict[str, Any]] = []
    items: list[PredictionItem] = []
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (a trailing newline, say) carry nothing
        try:
            record = json.loads(line)
            items.append(prediction_item_parse(data=record))
            records.append(record)
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
        except ValueError as exc:
            errors.append(f"line {number}: {exc}")
    if errors:
        more = len(errors) - MAX_ERRORS_SHOWN
        shown = errors[:MAX_ERRORS_SHOWN] + ([f"… and {more} more bad lines"] if more > 0 else [])
        raise CommandError("Nothing was written; fix these lines:\n" + "\n".join(shown))
    return records, items


def _write(*, path: Path, records: list[dict[str, Any]], probabilities: list[float]) -> None:
    """Write next to the target and rename, so a reader never sees half a file."""
    folder = path.resolve().parent
    if not folder.is_dir():
        raise CommandError(f"Output folder {folder} does not exist.")
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for record, p_a in zip(records, probabilities, strict=True):
                out.write(json.dumps({**record, "p_a": p_a}, ensure_ascii=False) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
