"""Fixtures for moral-graph mode: a study with one question and context, participants that join
through the real study link, values cards and votes built row by row in the real database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import factory
import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from annotation.models import Participant, ValuesCard, WiserVote
from config.celery import app as celery_app
from elicitation.models import MoralContext, MoralQuestion, Study
from tests.factories import ParticipantFactory, StudyFactory

QUESTION = "A user asks an AI assistant for advice about whether to leave their job to care for a parent."
CONTEXT = "When the user feels torn between duty and their own future"


class MoralQuestionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MoralQuestion

    study = factory.SubFactory(StudyFactory, moral_graph_mode=Study.MoralGraphMode.ONLY)
    text = QUESTION
    position = factory.Sequence(lambda n: n)


class MoralContextFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MoralContext

    question = factory.SubFactory(MoralQuestionFactory)
    text = CONTEXT
    position = factory.Sequence(lambda n: n)


class ValuesCardFactory(factory.django.DjangoModelFactory):
    """A confirmed card (researcher-seeded unless a participant is given)."""

    class Meta:
        model = ValuesCard

    context = factory.SubFactory(MoralContextFactory)
    participant = None
    status = ValuesCard.Status.CONFIRMED
    title = factory.Sequence(lambda n: f"Value {n}")
    description = factory.Sequence(lambda n: f"Description of value {n}.")
    attention_policies = factory.LazyFunction(lambda: ["MOMENTS when the person feels unheard"])
    interview_backend = ValuesCard.Backend.RESEARCHER
    confirmed_at = factory.LazyFunction(timezone.now)


def moral_study(*, mode: str = Study.MoralGraphMode.ONLY, contexts: int = 1, **fields: Any) -> tuple[Study, list[MoralContext]]:
    study = StudyFactory(moral_graph_mode=mode, **fields)
    question = MoralQuestionFactory(study=study)
    return study, [MoralContextFactory(question=question, text=f"{CONTEXT} ({i + 1})") for i in range(contexts)]


def vote_add(*, participant: Participant, from_card: ValuesCard, to_card: ValuesCard, answer: str) -> WiserVote:
    return WiserVote.objects.create(
        participant=participant, context=from_card.context, from_card=from_card, to_card=to_card,
        answer=answer, submission_id=uuid.uuid4(),
    )


def voters(study: Study, count: int, **attributes: Any) -> list[Participant]:
    return [ParticipantFactory(study=study, attributes=dict(attributes)) for _ in range(count)]


def join(client: Client, study: Study, pid: str = "PID-1") -> Participant:
    """Open the study link with a recruitment id and agree (the real consent path)."""
    client.get(f"/s/{study.slug}/?pid={pid}")
    response = client.post(f"/s/{study.slug}/consent/", {"decision": "agree"})
    assert response.status_code == 302, response.content[:500]
    return Participant.objects.get(study=study, external_id=pid)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _celery_in_process() -> Iterator[None]:
    """Aggregation requested by votes runs in this process (the task code path, without a worker);
    nothing is written to a shared broker."""
    conf = celery_app.conf
    saved = conf.task_always_eager
    conf.task_always_eager = True
    try:
        yield
    finally:
        conf.task_always_eager = saved


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """The aggregation request marker lives in the (per-process) cache; each test starts without it."""
    cache.clear()


@pytest.fixture(autouse=True)
def _llm_off(settings: Any) -> None:
    """Guided interviews unless a test configures the LLM (with its own test server)."""
    settings.POLYPHONY_LLM_BASE_URL = ""
