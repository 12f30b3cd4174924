"""Fixtures for the reward-model tests: a small study with two planted groups of annotators.

Half the annotators prefer formal, careful answers; the other half casual, breezy ones. Every
judgment compares a formal with a casual response to the same prompt, so one shared reward
(BTL) can do no better than chance on held-out judgments while a two-group model can.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kombu.pools
import pytest
from django.utils import timezone

from annotation.models import Judgment, Participant
from config.celery import app as celery_app
from elicitation.models import Pair, Response, Study
from modeling.models import TrainingRun
from tests.factories import ParticipantFactory, PromptFactory, ResponseFactory, StudyFactory, pair_create

# Small and quick: a few dozen full-batch epochs are plenty for 150 judgments of 16 texts.
FAST = {"epochs": 60, "hidden_dim": 32, "latent_dim": 8}

TOPICS: list[tuple[str, tuple[str, str], tuple[str, str]]] = [
    (
        "How should I start running?",
        ("It is advisable to begin with short, slow runs and to rest between them, as this is regarded as best practice.",
         "One should acquire properly fitted footwear before commencing any programme of running."),
        ("lol just go run a bit, slow is fine, no big deal 😄",
         "honestly grab whatever shoes u have and go, it's fun!!"),
    ),
    (
        "How do I learn to cook at home?",
        ("It is recommended that you master three or four simple recipes before attempting more elaborate dishes.",
         "One should maintain a modest supply of staple ingredients in the pantry at all times."),
        ("just wing it lol, throw stuff in a pan and see what happens 🍳",
         "tbh youtube + pasta = chef, easy peasy"),
    ),
    (
        "What is a good way to save money each month?",
        ("It would be prudent to record all expenditure for one month and to review it carefully thereafter.",
         "Furthermore, it is advisable to transfer savings to a separate account upon receipt of your salary."),
        ("stop buying coffee lol that's literally it 💸",
         "cancel netflix, eat noodles, boom rich haha"),
    ),
    (
        "How can I sleep better at night?",
        ("It is advisable to retire at a consistent hour each evening and to keep the bedroom cool and dark.",
         "One should refrain from consuming caffeine after midday in order to promote restful sleep."),
        ("put the phone down lol and just chill, works for me 😴",
         "honestly a nap fixes everything, just vibe"),
    ),
]


@dataclass
class PlantedStudy:
    study: Study
    group_of: dict[str, str]  # participant external id -> "formal" | "casual"
    formal: list[Response] = field(default_factory=list)
    casual: list[Response] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)


def planted_study_create(
    *, owner: Any = None, per_group: int = 6, judgments_each: int = 12, noise: float = 0.05, seed: int = 0,
    with_strength: bool = False, slug: str | None = None,
) -> PlantedStudy:
    """A study whose annotators form two groups with opposite tastes (built row by row, real database)."""
    rng = random.Random(seed)
    fields: dict[str, Any] = {"strength_labels": ["slightly", "clearly", "much"] if with_strength else []}
    if owner is not None:
        fields["owner"] = owner
    if slug is not None:
        fields["slug"] = slug
    study = StudyFactory(**fields)
    planted = PlantedStudy(study=study, group_of={})
    for question, formal_texts, casual_texts in TOPICS:
        prompt = PromptFactory(study=study, text=question)
        formal = [ResponseFactory(prompt=prompt, text=t) for t in formal_texts]
        casual = [ResponseFactory(prompt=prompt, text=t) for t in casual_texts]
        planted.formal += formal
        planted.casual += casual
        for f in formal:
            for c in casual:
                planted.pairs.append(pair_create(prompt=prompt, first=f, second=c))
    formal_ids = {r.pk for r in planted.formal}
    now = timezone.now()
    judgments = []
    for group in ("formal", "casual"):
        for i in range(per_group):
            participant = ParticipantFactory(study=study, external_id=f"{group}-{i}")
            planted.group_of[participant.external_id] = group
            for pair in rng.sample(planted.pairs, min(judgments_each, len(planted.pairs))):
                first, second = (pair.response_a, pair.response_b)
                if rng.random() < 0.5:
                    first, second = second, first
                likes_first = (first.pk in formal_ids) == (group == "formal")
                if rng.random() < noise:
                    likes_first = not likes_first
                judgments.append(Judgment(
                    study=study, participant=participant, pair=pair, response_a=first, response_b=second,
                    choice="a" if likes_first else "b", answered_at=now,
                    strength=rng.randint(1, 3) if with_strength else None,
                ))
    Judgment.objects.bulk_create(judgments)
    return planted


def judgments_add(*, study: Study, count: int, external_id: str = "late-annotator") -> Participant:
    """`count` more judgments of one annotator on the study's first pair."""
    participant, _ = Participant.objects.get_or_create(
        study=study, external_id=external_id, defaults={"source": Participant.Source.PID, "consented_at": timezone.now()}
    )
    pair = Pair.objects.filter(study=study).first()
    Judgment.objects.bulk_create([
        Judgment(study=study, participant=participant, pair=pair, response_a=pair.response_a,
                 response_b=pair.response_b, choice="a", answered_at=timezone.now())
        for _ in range(count)
    ])
    return participant


@contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Point the Celery app of this process at another broker, then back.

    The app caches its connection and producer pools, so both are dropped on each switch.
    """
    conf = celery_app.conf
    saved = (conf.broker_url, conf.broker_transport_options, conf.task_always_eager)
    conf.broker_url, conf.broker_transport_options = url, {}
    _celery_pools_reset()
    try:
        yield
    finally:
        conf.broker_url, conf.broker_transport_options, conf.task_always_eager = saved
        _celery_pools_reset()


def _celery_pools_reset() -> None:
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    # kombu keeps its pools in a process-wide registry: empty it, or the old broker's pool returns.
    kombu.pools.reset()


@pytest.fixture(autouse=True, scope="session")
def _torch_one_thread() -> None:
    """One torch thread: the test machine has two cores shared by parallel test runs, and there
    two threads make small forward passes several times slower (thread hand-offs dominate)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # The researcher fixtures get hashed passwords; PBKDF2 costs about a second each here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _modeling_media_and_broker(settings: Any, tmp_path: Path) -> Iterator[None]:
    """Model files under a temporary MEDIA_ROOT; tasks go to kombu's in-memory broker, not a shared one."""
    settings.MEDIA_ROOT = tmp_path / "media"
    with celery_broker("memory://"):
        yield


@pytest.fixture
def planted(researcher: Any) -> PlantedStudy:
    return planted_study_create(owner=researcher)


def run_sync(*, study: Study, kind: str = "pal-a", groups: int | None = 2, **params: Any) -> TrainingRun:
    """Request and execute a run in this process (what `train_reward_model --sync` does)."""
    from modeling.services import training_run_execute, training_run_request

    run, created = training_run_request(
        study=study, kind=kind, groups=groups, hyperparameters={**FAST, **params}, enqueue=False
    )
    assert created
    return training_run_execute(run_id=run.pk)


@pytest.fixture
def trained(planted: PlantedStudy) -> tuple[PlantedStudy, TrainingRun]:
    """The planted study with a finished two-group PAL-A model."""
    run = run_sync(study=planted.study)
    assert run.status == TrainingRun.Status.DONE, run.error
    return planted, run
