"""`manage.py import_responses STUDY FILE`: the import page's prompts-and-responses import, from a shell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from elicitation.imports import ImportRejected, import_bytes_read, import_format_guess, responses_import
from elicitation.models import Study


class Command(BaseCommand):
    help = (
        "Import prompts and candidate responses (JSONL or CSV) into a study. All or nothing: "
        "a bad line rejects the file, writes nothing and exits non-zero."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study", help="Slug of the study.")
        parser.add_argument("file", type=Path, help="A .jsonl or .csv file (UTF-8).")
        parser.add_argument(
            "--format", choices=["jsonl", "csv"], default=None,
            help="File format; by default guessed from the file name, then the content.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        study = Study.objects.filter(slug=options["study"]).first()
        if study is None:
            raise CommandError(f"No study with slug {options['study']!r}.")
        path: Path = options["file"]
        try:
            with path.open("rb") as stream:
                data = import_bytes_read(stream=stream)
            file_format = options["format"] or import_format_guess(filename=path.name, data=data)
            result = responses_import(study=study, data=data, file_format=file_format)
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}.") from None
        except ImportRejected as rejected:
            raise CommandError("Import rejected; nothing was written.\n" + "\n".join(rejected.errors)) from None
        self.stdout.write(self.style.SUCCESS(result.summary()))
