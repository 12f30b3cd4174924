"""Load the demo study: researcher and admin accounts, a survey, prompts with responses, attention checks.

Idempotent: running it again changes nothing (accounts and study are looked up; the import is
de-duplicated by content hash).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from elicitation.imports import responses_import
from elicitation.models import Study, SurveyQuestion

DEMO_DATA = Path(__file__).resolve().parents[2] / "demo_data" / "responses.jsonl"
DEMO_SLUG = "demo-helpfulness"

SURVEY: list[dict[str, Any]] = [
    {"key": "age_group", "text": "What is your age group?", "kind": SurveyQuestion.Kind.CHOICE,
     "choices": ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"], "required": True},
    {"key": "ai_use", "text": "How often do you use AI assistants?", "kind": SurveyQuestion.Kind.CHOICE,
     "choices": ["Never", "Monthly", "Weekly", "Daily"], "required": True},
    {"key": "languages", "text": "Which languages do you read fluently?", "kind": SurveyQuestion.Kind.MULTI_CHOICE,
     "choices": ["English", "Spanish", "German", "French", "Hindi", "Mandarin", "Other"], "required": False},
    {"key": "years_education", "text": "Years of formal education", "kind": SurveyQuestion.Kind.NUMBER,
     "min_value": 0, "max_value": 30, "required": False},
    {"key": "values_note", "text": "In one sentence: what makes an answer good for you?",
     "kind": SurveyQuestion.Kind.TEXT, "required": False},
]


class Command(BaseCommand):
    help = "Create the demo researcher, admin and an open demo study with prompts, responses and a survey."

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        with transaction.atomic():
            researcher, created = user_model.objects.get_or_create(username="demo", defaults={"email": "demo@example.org"})
            if created:
                researcher.set_password("polyphony-demo")
                researcher.save()
            admin, created = user_model.objects.get_or_create(
                username="admin", defaults={"email": "admin@example.org", "is_staff": True, "is_superuser": True}
            )
            if created:
                admin.set_password("polyphony-admin")
                admin.save()
            study, _ = Study.objects.get_or_create(
                slug=DEMO_SLUG,
                defaults={
                    "owner": researcher,
                    "title": "Which answer helps more?",
                    "description": "Compare two assistant answers to everyday requests.",
                    "consent_text": (
                        "This demo study asks you to compare pairs of answers written for everyday requests. "
                        "We store your answers, the time you took and the demographics you give, linked to a "
                        "pseudonymous id. You may withdraw at any time and have your data deleted."
                    ),
                    "instructions": (
                        "Read the request and both answers. Choose the answer you would rather receive "
                        "(keys 1 and 2, or 0 if they are equally good), say how much better it is, and press Enter."
                    ),
                    "status": Study.Status.OPEN,
                    "judgments_per_participant": 12,
                    "overlap_target": 3,
                    "allow_ties": True,
                    "strength_labels": ["slightly better", "clearly better", "much better"],
                    "rationale_mode": Study.RationaleMode.OPTIONAL,
                    "completion_code": "POLY-DEMO-2026",
                },
            )
            for position, question in enumerate(SURVEY):
                SurveyQuestion.objects.get_or_create(
                    study=study, key=question["key"], defaults={**question, "position": position}
                )
        result = responses_import(study=study, data=DEMO_DATA.read_bytes(), file_format="jsonl")
        self.stdout.write(
            f"Demo study {study.slug!r}: {study.prompts.count()} prompts, {study.pairs.count()} pairs "
            f"— {result.summary()}"
        )
