"""A study with known structure for the insight dashboard tests.

Four prompts of five responses (ten pairs each). Responses are numbered 0..4 within a prompt and
everyone agrees that a lower number is better — except a minority group, which ranks response 0
of every prompt *last*. So the 16 pairs involving a response 0 are the planted divisive pairs,
response 1 (second for the majority, first for the minority) bridges, a random clicker answers
by coin flip, and one majority member fails every attention check. With `with_fast=True` one more
majority member answers every pair in well under a second (a time-per-judgment outlier).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone

from annotation.models import Judgment, Participant
from elicitation.models import Pair, Response, Study
from tests.factories import ParticipantFactory, PromptFactory, ResponseFactory, StudyFactory, pair_create

MAJORITY = 8
MINORITY = 4


@dataclass
class InsightStudy:
    study: Study
    pairs: list[Pair] = field(default_factory=list)
    rank: dict[int, int] = field(default_factory=dict)  # response id -> 0..4 within its prompt
    divisive_pair_ids: set[int] = field(default_factory=set)
    bridging_ids: set[int] = field(default_factory=set)
    members: dict[str, list[Participant]] = field(default_factory=dict)


def insight_study_create(*, owner: object, seed: int = 3, noise: float = 0.04, with_fast: bool = False) -> InsightStudy:
    rng = random.Random(seed)
    study = StudyFactory(owner=owner)
    planted = InsightStudy(study=study)
    for p in range(4):
        prompt = PromptFactory(study=study, text=f"Question {p}: what should I do about plan {p}?")
        # Created in a shuffled order: a pair's canonical side (lower id) must not give away the
        # better response, or every vote lands on one side and chance agreement is near 1.
        order = rng.sample(range(5), 5)
        created = {r: ResponseFactory(prompt=prompt, text=f"Q{p} answer {r}") for r in order}
        responses: list[Response] = [created[r] for r in range(5)]
        for r, response in enumerate(responses):
            planted.rank[response.pk] = r
        planted.bridging_ids.add(responses[1].pk)
        for x in range(5):
            for y in range(x + 1, 5):
                pair = pair_create(prompt=prompt, first=responses[x], second=responses[y])
                planted.pairs.append(pair)
                if x == 0:
                    planted.divisive_pair_ids.add(pair.pk)
    right = ResponseFactory(prompt=planted.pairs[0].prompt, text="Obviously right: pick me")
    wrong = ResponseFactory(prompt=planted.pairs[0].prompt, text="Obviously wrong answer")
    check_pair = pair_create(
        prompt=planted.pairs[0].prompt, first=right, second=wrong, is_attention_check=True, correct_response=right,
    )
    now = timezone.now()
    judgments: list[Judgment] = []

    def prefers_first(view: str, first: Response, second: Response) -> bool:
        if view == "random":
            return rng.random() < 0.5
        a, b = planted.rank[first.pk], planted.rank[second.pk]
        if view == "minority":
            a, b = (5 if a == 0 else a), (5 if b == 0 else b)
        better = a < b
        return (not better) if rng.random() < noise else better

    def judge(participant: Participant, view: str, *, fails_checks: bool = False, fast: bool = False) -> None:
        seconds = rng.uniform(0.4, 0.7) if fast else rng.uniform(6, 12)
        repeats = rng.sample(planted.pairs, 5)
        for pair in planted.pairs + repeats:
            first, second = pair.response_a, pair.response_b
            if rng.random() < 0.5:
                first, second = second, first
            served = now + timedelta(seconds=len(judgments) * 20)
            judgments.append(Judgment(
                study=study, participant=participant, pair=pair, response_a=first, response_b=second,
                choice="a" if prefers_first(view, first, second) else "b",
                served_at=served, answered_at=served + timedelta(seconds=seconds * rng.uniform(0.8, 1.25)),
            ))
        for _ in range(3):
            served = now + timedelta(seconds=len(judgments) * 20)
            judgments.append(Judgment(
                study=study, participant=participant, pair=check_pair, response_a=check_pair.response_a,
                response_b=check_pair.response_b, choice="a", is_attention_check=True,
                attention_passed=not fails_checks, served_at=served, answered_at=served + timedelta(seconds=seconds),
            ))

    for view, count in (("majority", MAJORITY), ("minority", MINORITY)):
        planted.members[view] = []
        for i in range(count):
            country = "UK" if view == "majority" else "US"
            participant = ParticipantFactory(
                study=study, external_id=f"{view}-{i}",
                attributes={"country": country, "age": rng.choice(["18-34", "35+"])},
            )
            planted.members[view].append(participant)
            judge(participant, view)
    clicker = ParticipantFactory(study=study, external_id="random-clicker",
                                 attributes={"country": "UK", "age": "18-34"})
    judge(clicker, "random")
    careless = ParticipantFactory(study=study, external_id="fails-checks",
                                  attributes={"country": "UK", "age": "35+"})
    judge(careless, "majority", fails_checks=True)
    planted.members["random"] = [clicker]
    planted.members["careless"] = [careless]
    if with_fast:
        fast = ParticipantFactory(study=study, external_id="too-fast", attributes={"country": "UK", "age": "35+"})
        judge(fast, "majority", fast=True)
        planted.members["fast"] = [fast]
    Judgment.objects.bulk_create(judgments)
    return planted
