"""`manage.py export_comparisons STUDY --format F -o PATH`: the export page's files, from a shell."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.exports import export_file_write, export_text_chunks
from annotation.models import ExportJob
from elicitation.models import Study


class Command(BaseCommand):
    help = (
        "Export a study's judgments as JSONL (comparison format), CSV, Parquet or the preference-training "
        "layout (prompt/chosen/rejected). Streams from the database: memory stays flat for any size."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study", help="Slug of the study.")
        parser.add_argument("--format", choices=ExportJob.Format.values, default=ExportJob.Format.JSONL)
        parser.add_argument("-o", "--output", required=True, help='Output file; "-" writes to stdout (not Parquet).')
        parser.add_argument(
            "--include-attention-checks", action="store_true",
            help="Include attention-check judgments, flagged with attention_check/attention_passed.",
        )
        parser.add_argument(
            "--pseudonymize", action=argparse.BooleanOptionalAction, default=True,
            help="Replace annotator ids with salted hashes (the default; --no-pseudonymize keeps the ids).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        study = Study.objects.filter(slug=options["study"]).first()
        if study is None:
            raise CommandError(f"No study with slug {options['study']!r}.")
        export_format, output = options["format"], options["output"]
        flags = {
            "include_attention_checks": options["include_attention_checks"],
            "pseudonymize": options["pseudonymize"],
        }
        if output == "-":
            if export_format == ExportJob.Format.PARQUET:
                raise CommandError("Parquet cannot be written to stdout; give a file with -o.")
            for chunk in export_text_chunks(study=study, export_format=export_format, **flags):
                self.stdout.write(chunk, ending="")
            return
        path = Path(output)
        partial = path.with_name(f".{path.name}.part")  # renamed at the end: no half-written file at PATH
        try:
            rows = export_file_write(study=study, export_format=export_format, path=partial, **flags)
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise CommandError(f"Cannot write {path}: {exc.strerror or exc}.") from None
        self.stderr.write(self.style.SUCCESS(f"Wrote {rows} rows to {path}."))
