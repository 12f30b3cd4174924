"""Fuzz every operation of the API from its own OpenAPI schema (schemathesis, in-process WSGI).

The schema is what /api/schema/ serves; each operation gets generated requests that fit the schema
(positive) and that break it (negative: wrong types, missing fields, out-of-range values), sent with
real credentials to a seeded study: a researcher's DRF token for the researcher API, a participant's
Bearer token for /api/v1/participant/*. Path parameters are those of the seeded study (so requests
reach the code behind the lookup) and, for a few examples, generated ones (unknown ids and slugs).

The properties: no 5xx, ever; every 4xx is a JSON object naming the problem (`detail`).

The seeded study has a trained BTL model (about 4 s), so predict and model.zip answer with data.
Runs on a real database in autocommit mode (`transaction=True`), like production: a database error
would break the request that caused it, not the test's surrounding transaction. Tasks go to kombu's
in-memory broker (no worker here; the export and training runs the fuzz requests just stay queued).
Throttle rates are turned off for the test.

Bigger runs: `bench/bench_api_fuzz.py` (same code, more examples, prints the counts).
"""

from __future__ import annotations

import functools
import json
import os
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from django.core.signals import got_request_exception
from django.test import Client
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode

from annotation.exports import export_job_create, export_job_run
from annotation.models import ExportJob
from config.wsgi import application
from elicitation.models import StudyCollaborator
from modeling.analytics_services import study_analytics_compute
from modeling.models import AnalyticsSnapshot, TrainingRun
from tests.factories import (
    ParticipantFactory,
    PromptFactory,
    ResponseFactory,
    SurveyQuestionFactory,
    UserFactory,
    pair_create,
)
from tests.modeling.conftest import celery_broker, planted_study_create, run_sync

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Examples per operation: schema-conforming and schema-breaking requests to the seeded study's
# paths, and a few to generated paths. POLYPHONY_FUZZ_SCALE multiplies them (the bench uses it).
SCALE = float(os.environ.get("POLYPHONY_FUZZ_SCALE", "1"))
# The test is derandomized (the same requests every run, so CI never flakes on a new find); the
# bench sets POLYPHONY_FUZZ_RANDOM=1 for fresh examples each run.
DERANDOMIZE = os.environ.get("POLYPHONY_FUZZ_RANDOM", "") != "1"
EXAMPLES = {"positive": 20, "negative": 12, "random_path": 3}
# Writes last, so the reads and the participant API see the seeded study before PATCH may close it.
METHOD_ORDER = {"GET": 0, "POST": 1, "DELETE": 2, "PATCH": 3}


@dataclass
class FuzzReport:
    operations: int = 0
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    per_operation: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        server_errors = sum(n for s, n in self.statuses.items() if s >= 500)
        return {
            "operations": self.operations, "requests": self.requests, "server_errors_5xx": server_errors,
            "non_json_4xx": sum(1 for f in self.failures if f.startswith("non-JSON")),
            "statuses": dict(sorted(self.statuses.items())), "per_operation": self.per_operation,
            "failures": self.failures,
        }


@dataclass(frozen=True)
class World:
    slug: str
    researcher_token: str
    participant_token: str
    path_parameters: dict[str, Any]


@pytest.fixture
def world(settings: Any, tmp_path: Path) -> Iterator[World]:
    settings.MEDIA_ROOT = tmp_path / "media"
    # Throttles would turn the fuzz's burst into 429s and hide what is behind them: no default
    # classes, and no rate for any scope (a rate of None turns a view's own throttle off).
    rates = settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {})
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": [],
                               "DEFAULT_THROTTLE_RATES": dict.fromkeys(rates)}
    with celery_broker("memory://"):
        yield _world_seed()


def _world_seed() -> World:
    """A study with prompts, responses, pairs, a survey, participants, judgments, a collaborator, an
    export file, a training run and an insight snapshot; a participant registered through the API."""
    researcher = UserFactory(username="fuzz-owner")
    planted = planted_study_create(owner=researcher, per_group=3, judgments_each=4, slug="fuzzed")
    study = planted.study
    study.judgments_per_participant = 1000  # the API participant answers until the pool runs out
    study.save(update_fields=["judgments_per_participant"])
    for _ in range(2):  # 20 more pairs: the planted pool has 16
        prompt = PromptFactory(study=study)
        responses = [ResponseFactory(prompt=prompt) for _ in range(5)]
        for i, first in enumerate(responses):
            for second in responses[i + 1:]:
                pair_create(prompt=prompt, first=first, second=second)
    SurveyQuestionFactory(study=study, key="age_band", choices=["18-30", "31+"])
    ParticipantFactory(study=study, external_id="survey-taker", attributes={"age_band": "31+"})
    StudyCollaborator.objects.create(study=study, user=UserFactory(username="fuzz-viewer"),
                                     role=StudyCollaborator.Role.VIEWER)
    job = export_job_create(study=study, user=researcher, export_format=ExportJob.Format.JSONL)
    export_job_run(export_job_id=job.pk)
    # A real model (BTL: ~4 s here), so predict, the run's detail and model.zip answer with data.
    run = run_sync(study=study, kind=TrainingRun.Kind.BTL, groups=None)
    assert run.status == TrainingRun.Status.DONE, run.error
    snapshot = study_analytics_compute(study_id=study.pk)  # a real insight analysis, with its figures
    assert snapshot.status == AnalyticsSnapshot.Status.DONE, snapshot.error
    token = Token.objects.create(user=researcher).key
    registered = Client().post(f"/api/v1/studies/{study.slug}/participants", {"external_id": "fuzz-participant"},
                               content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}")
    assert registered.status_code == 201, registered.content
    return World(
        slug=study.slug, researcher_token=token, participant_token=registered.json()["token"],
        path_parameters={"slug": study.slug, "job_id": job.pk, "run_id": run.pk, "username": "fuzz-viewer",
                         "name": "map", "fmt": "svg"},
    )


def fuzz_api(*, world: World, scale: float = 1.0, derandomize: bool = True) -> FuzzReport:
    """Send the generated requests of every operation; collect (not raise) what breaks the properties."""
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    operations = sorted((r.ok() for r in schema.get_all_operations()),
                        key=lambda op: (METHOD_ORDER.get(op.method.upper(), 9), op.path))
    report = FuzzReport(operations=len(operations))
    for operation in operations:
        counts: Counter[str] = Counter()
        headers = {"Authorization": (f"Bearer {world.participant_token}" if "/participant/" in operation.path
                                     else f"Token {world.researcher_token}")}
        fixed = {name: value for name, value in world.path_parameters.items()
                 if name in {p.name for p in operation.path_parameters}}
        for label, mode, path_parameters in (
            ("positive", GenerationMode.POSITIVE, fixed),
            ("negative", GenerationMode.NEGATIVE, fixed),
            ("random_path", GenerationMode.POSITIVE, None),
        ):
            if label == "random_path" and not fixed:
                continue
            examples = max(1, round(EXAMPLES[label] * scale))
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
            # Generated served ids are never ones the participant was shown: schema-conforming answers
            # also go to the pair the participant has now, so the submission itself gets fuzzed.
            adjust = (functools.partial(_served_id_current, world=world)
                      if label == "positive" and operation.path.endswith("/participant/judgments") else None)
            _run_examples(strategy=strategy, examples=examples, derandomize=derandomize, headers=headers,
                          report=report, counts=counts, adjust=adjust)
        report.per_operation[f"{operation.method.upper()} {operation.path}"] = dict(counts)
    return report


def _served_id_current(case: schemathesis.Case, *, world: World) -> None:
    if not isinstance(case.body, dict):
        return
    response = Client().get("/api/v1/participant/next", HTTP_AUTHORIZATION=f"Bearer {world.participant_token}")
    if response.status_code == 200:
        case.body["served_id"] = response.json()["served_id"]


def _run_examples(*, strategy: Any, examples: int, derandomize: bool, headers: dict[str, str],
                  report: FuzzReport, counts: Counter[str], adjust: Callable[[schemathesis.Case], None] | None) -> None:
    @hypothesis.settings(
        max_examples=examples, deadline=None, database=None, derandomize=derandomize,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def send(case: schemathesis.Case) -> None:
        if adjust is not None:
            adjust(case)
        raised: list[str] = []

        def _record(sender: object, request: object = None, **kwargs: object) -> None:
            raised.append(traceback.format_exc())

        got_request_exception.connect(_record)
        try:
            response = case.call(headers=headers)
        finally:
            got_request_exception.disconnect(_record)
        report.requests += 1
        report.statuses[response.status_code] += 1
        counts["requests"] += 1
        counts[str(response.status_code)] += 1
        problem = _problem(response)
        if problem:
            report.failures.append(f"{problem}: {case.method} {case.formatted_path} query={case.query!r} "
                                   f"body={_short(case.body)} -> {response.status_code} {_short(response.text)}"
                                   + (f"\n{raised[-1]}" if raised else ""))

    try:
        send()
    except hypothesis.errors.Unsatisfiable:
        counts["nothing_to_generate"] += 1  # e.g. negative examples of an operation without inputs


def _problem(response: schemathesis.Response) -> str:
    if response.status_code >= 500:
        return "5xx"
    if 400 <= response.status_code < 500:
        content_type = response.headers.get("content-type", [""])[0]
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        if "json" not in content_type or not isinstance(body, dict) or "detail" not in body:
            return "non-JSON 4xx"
    return ""


def _short(value: object, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def test_fuzzed_requests_never_get_a_5xx_and_every_4xx_is_json(world: World) -> None:
    report = fuzz_api(world=world, scale=SCALE, derandomize=DERANDOMIZE)
    summary = report.as_dict()
    out = os.environ.get("POLYPHONY_FUZZ_REPORT")
    if out:
        Path(out).write_text(json.dumps(summary, indent=2))
    assert report.operations >= 24 and report.requests >= report.operations * 20
    # Not vacuous: the credentials and the seeded ids work, so a good share of requests got through.
    accepted = sum(n for status, n in report.statuses.items() if 200 <= status < 300)
    assert accepted >= report.requests * 0.3, summary["statuses"]
    assert not report.failures, f"{len(report.failures)} failing requests:\n" + "\n\n".join(report.failures[:15])
