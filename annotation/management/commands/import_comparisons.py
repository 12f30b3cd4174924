"""`manage.py import_comparisons STUDY FILE [--create-study]`: import comparisons from a shell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.comparisons import comparisons_import, comparisons_import_new_study
from elicitation.imports import ImportRejected, import_bytes_read
from elicitation.models import Study


class Command(BaseCommand):
    help = (
        "Import comparisons in the comparison format (JSONL) into a study, e.g. to start from a "
        "public dataset. All or nothing: a bad line rejects the file, writes nothing and exits non-zero. "
        "Comparisons whose id is already in the study are skipped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study", help="Slug of the study.")
        parser.add_argument("file", type=Path, help="A UTF-8 JSONL file, one comparison a line.")
        parser.add_argument(
            "--create-study", action="store_true",
            help="Create the study if it does not exist (owned by --owner, else the first superuser).",
        )
        parser.add_argument("--owner", default=None, help="Username owning a study made by --create-study.")
        parser.add_argument("--title", default="", help="Title of a study made by --create-study.")
        parser.add_argument(
            "--strength-labels", default="",
            help='Comma-separated strength labels, weakest first, for --create-study (e.g. "slightly,clearly,much").',
        )
        parser.add_argument("--no-ties", action="store_true", help="A study made by --create-study allows no ties.")

    def handle(self, *args: Any, **options: Any) -> None:
        slug: str = options["study"]
        path: Path = options["file"]
        try:
            with path.open("rb") as stream:
                data = import_bytes_read(stream=stream)
            if options["create_study"]:
                study, result = comparisons_import_new_study(
                    slug=slug, data=data, owner_username=options["owner"], title=options["title"],
                    allow_ties=not options["no_ties"],
                    strength_labels=[label.strip() for label in options["strength_labels"].split(",") if label.strip()],
                )
            else:
                study = Study.objects.filter(slug=slug).first()
                if study is None:
                    raise CommandError(f"No study with slug {slug!r}; pass --create-study to create it.")
                result = comparisons_import(study=study, data=data)
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}.") from None
        except ImportRejected as rejected:
            raise CommandError("Import rejected; nothing was written.\n" + "\n".join(rejected.errors)) from None
        self.stdout.write(self.style.SUCCESS(f"{study.slug}: {result.summary()}"))
