"""factory_boy factories shared by every test module."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from annotation.models import Participant
from elicitation.models import Pair, Prompt, Response, Study, SurveyQuestion, content_hash


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"researcher{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.django.Password("correct horse battery staple")


class StudyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Study

    owner = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Study {n}")
    slug = factory.Sequence(lambda n: f"study-{n}")
    consent_text = "You agree to take part. You may withdraw at any time."
    instructions = "Pick the better response."
    status = Study.Status.OPEN
    judgments_per_participant = 10
    strength_labels = factory.LazyFunction(lambda: ["slightly", "clearly", "much"])
    completion_code = "C0MPL3TE"


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    study = factory.SubFactory(StudyFactory)
    text = factory.Sequence(lambda n: f"Prompt number {n}: how should I plan my week?")
    content_hash = factory.LazyAttribute(lambda p: content_hash(p.text))


class ResponseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Response

    prompt = factory.SubFactory(PromptFactory)
    text = factory.Sequence(lambda n: f"Response number {n}: start with your priorities.")
    content_hash = factory.LazyAttribute(lambda r: content_hash(r.text))


def pair_create(*, prompt: Prompt, first: Response, second: Response, **extra: object) -> Pair:
    """A pool pair in canonical order."""
    a, b = sorted([first, second], key=lambda r: r.pk)
    return Pair.objects.create(study=prompt.study, prompt=prompt, response_a=a, response_b=b, **extra)


def study_with_pool(*, prompts: int = 3, responses_per_prompt: int = 4, **study_fields: object) -> Study:
    """A study with every pair of responses to the same prompt in its pool."""
    study = StudyFactory(**study_fields)
    for _ in range(prompts):
        prompt = PromptFactory(study=study)
        responses = [ResponseFactory(prompt=prompt) for _ in range(responses_per_prompt)]
        for i, first in enumerate(responses):
            for second in responses[i + 1:]:
                pair_create(prompt=prompt, first=first, second=second)
    return study


class SurveyQuestionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SurveyQuestion

    study = factory.SubFactory(StudyFactory)
    key = factory.Sequence(lambda n: f"q{n}")
    text = factory.Sequence(lambda n: f"Question {n}?")
    kind = SurveyQuestion.Kind.CHOICE
    choices = factory.LazyFunction(lambda: ["yes", "no"])


class ParticipantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Participant

    study = factory.SubFactory(StudyFactory)
    external_id = factory.Sequence(lambda n: f"participant-{n}")
    source = Participant.Source.PID
    consented_at = factory.LazyFunction(timezone.now)
