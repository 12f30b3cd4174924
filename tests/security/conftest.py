"""Two studies, every role and one object of each kind, for the access tests.

Study A ("alpha") is the study under test: its owner, a viewer and an editor collaborator, two
participants (one in a browser session, one with an API token) with served pairs and a judgment,
an export job, a finished training run with its files, an analysis, a moral question, context and
values card. Study B ("bravo") belongs to another researcher and has a participant, a served pair
and objects of its own, for the requests that mix A's URL with B's ids.

The strings in `World.secrets_a` must never appear in a response to someone who may not see A.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.sessions.backends.signed_cookies import SessionStore
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from annotation.models import ExportJob, Judgment, Participant, ServedPair, ValuesCard
from annotation.participant_tokens import participant_api_register
from annotation.selectors import SESSION_PARTICIPANTS
from annotation.services import instructions_acknowledge, judgment_submit, pair_serve_next
from elicitation.models import MoralContext, MoralQuestion, Pair, Study, StudyCollaborator
from modeling.models import AnalyticsSnapshot, TrainingRun
from tests.factories import (
    ParticipantFactory,
    PromptFactory,
    ResponseFactory,
    StudyFactory,
    SurveyQuestionFactory,
    UserFactory,
    pair_create,
)

ROLES = (
    "anonymous",
    "participant_session",  # participant of A, through the study link (signed-cookie session)
    "participant_token",  # participant of A, `Authorization: Bearer <token>`
    "participant_other",  # participant of B, both a session for B and B's token
    "owner",
    "viewer",
    "editor",
    "stranger",  # another researcher (owner of B)
    "admin",
)


@dataclass
class StudyObjects:
    study: Study
    prompts: list[str]
    participant: Participant  # browser session
    token_participant: Participant
    token: str
    served: ServedPair  # outstanding, of `participant`
    token_served: ServedPair  # outstanding, of `token_participant`
    attention_pair: Pair
    export_job: ExportJob
    run: TrainingRun
    question: MoralQuestion
    context: MoralContext
    card: ValuesCard  # the session participant's card, in interview
    seed_card: ValuesCard  # researcher-seeded, confirmed


@dataclass
class World:
    a: StudyObjects
    b: StudyObjects
    users: dict[str, AbstractBaseUser]
    secrets_a: list[str] = field(default_factory=list)
    secrets_b: list[str] = field(default_factory=list)

    def client(self, role: str, **client_kwargs: Any) -> Client:
        """A fresh client acting as `role` towards study A."""
        client = Client(**client_kwargs)
        if role in self.users:
            client.force_login(self.users[role])
        elif role == "participant_session":
            _session_set(client, {self.a.study.slug: self.a.participant.pk})
        elif role == "participant_token":
            client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {self.a.token}"
        elif role == "participant_other":
            _session_set(client, {self.b.study.slug: self.b.participant.pk})
            client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {self.b.token}"
        return client


def _session_set(client: Client, participants: dict[str, int]) -> None:
    session = SessionStore()
    session[SESSION_PARTICIPANTS] = participants
    session.save()
    client.cookies[django_settings.SESSION_COOKIE_NAME] = session.session_key


def _study_objects(*, owner: AbstractBaseUser, tag: str, media: Path) -> StudyObjects:
    study = StudyFactory(
        owner=owner, title=f"Secret study {tag} title", slug=f"study-{tag}",
        moral_graph_mode=Study.MoralGraphMode.ALONGSIDE, judgments_per_participant=5,
    )
    SurveyQuestionFactory(study=study, key=f"age_{tag}", text=f"Survey question {tag}?", kind="text", choices=[])
    prompts = []
    for i in range(2):
        prompt = PromptFactory(study=study, text=f"Secret prompt {tag} number {i}")
        prompts.append(prompt.text)
        responses = [ResponseFactory(prompt=prompt, text=f"Secret response {tag} {i}.{j}") for j in range(3)]
        for x in range(3):
            for y in range(x + 1, 3):
                pair_create(prompt=prompt, first=responses[x], second=responses[y])
    check_prompt = PromptFactory(study=study, text=f"Secret attention prompt {tag}")
    good, bad = (ResponseFactory(prompt=check_prompt, text=f"Secret check {tag} {k}") for k in ("good", "bad"))
    attention_pair = pair_create(prompt=check_prompt, first=good, second=bad, is_attention_check=True,
                                 correct_response=good)

    participant = ParticipantFactory(study=study, external_id=f"ext-{tag}-session",
                                     survey_completed_at=timezone.now())
    instructions_acknowledge(participant=participant)
    answered = pair_serve_next(participant=participant)
    judgment_submit(participant=participant, served_id=answered.pk, choice="a", strength=1,
                    rationale=f"Secret rationale {tag}")
    served = pair_serve_next(participant=participant)
    token_participant, token = participant_api_register(study=study, external_id=f"ext-{tag}-token", attributes={})
    token_participant.survey_completed_at = timezone.now()
    token_participant.save(update_fields=["survey_completed_at"])
    instructions_acknowledge(participant=token_participant)
    token_served = pair_serve_next(participant=token_participant)

    export_file = media / "exports" / f"{tag}.jsonl"
    export_file.parent.mkdir(parents=True, exist_ok=True)
    export_file.write_text(f'{{"prompt": "Secret prompt {tag} number 0", "annotator": "ext-{tag}-session"}}\n')
    export_job = ExportJob.objects.create(
        study=study, created_by=owner, format=ExportJob.Format.JSONL, status=ExportJob.Status.DONE,
        total_rows=1, rows_written=1, file_path=f"exports/{tag}.jsonl", finished_at=timezone.now(),
    )
    run_folder = media / "runs" / tag
    run_folder.mkdir(parents=True, exist_ok=True)
    (run_folder / "config.json").write_text("{}")
    (run_folder / "weights.pt").write_bytes(b"not really weights")
    run = TrainingRun.objects.create(
        study=study, kind=TrainingRun.Kind.BTL, status=TrainingRun.Status.DONE, artifact_path=f"runs/{tag}",
        finished_at=timezone.now(),
    )
    AnalyticsSnapshot.objects.create(
        study=study, status=AnalyticsSnapshot.Status.DONE, data={},
        plots={"agreement": f"<svg><text>Secret figure {tag}</text></svg>"}, finished_at=timezone.now(),
    )
    question = MoralQuestion.objects.create(study=study, text=f"Secret moral question {tag}")
    context = MoralContext.objects.create(question=question, text=f"Secret moral context {tag}")
    card = ValuesCard.objects.create(context=context, participant=participant, status=ValuesCard.Status.INTERVIEW)
    seed_card = ValuesCard.objects.create(
        context=context, status=ValuesCard.Status.CONFIRMED, title=f"Secret value {tag}",
        description=f"Secret value description {tag}", attention_policies=["MOMENTS when it matters"],
        interview_backend=ValuesCard.Backend.RESEARCHER, confirmed_at=timezone.now(),
    )
    return StudyObjects(
        study=study, prompts=prompts, participant=participant, token_participant=token_participant, token=token,
        served=served, token_served=token_served, attention_pair=attention_pair, export_job=export_job, run=run,
        question=question, context=context, card=card, seed_card=seed_card,
    )


@pytest.fixture
def world(db: Any, settings: Any, tmp_path: Path) -> World:
    settings.MEDIA_ROOT = tmp_path
    settings.POLYPHONY_JUDGMENT_HOOKS = []  # no retrain requests from the fixture's judgment
    cache.clear()  # throttling counters
    owner = UserFactory(username="owner")
    stranger = UserFactory(username="stranger")
    viewer = UserFactory(username="viewer")
    editor = UserFactory(username="editor")
    admin = UserFactory(username="siteadmin", is_staff=True, is_superuser=True)
    a = _study_objects(owner=owner, tag="alpha", media=tmp_path)
    b = _study_objects(owner=stranger, tag="bravo", media=tmp_path)
    StudyCollaborator.objects.create(study=a.study, user=viewer, role=StudyCollaborator.Role.VIEWER)
    StudyCollaborator.objects.create(study=a.study, user=editor, role=StudyCollaborator.Role.EDITOR)
    assert Judgment.objects.filter(study=a.study).count() == 1
    world = World(a=a, b=b, users={"owner": owner, "viewer": viewer, "editor": editor, "stranger": stranger,
                                   "admin": admin})
    for objects, secrets in ((a, world.secrets_a), (b, world.secrets_b)):
        secrets.extend([objects.study.title, *objects.prompts, objects.participant.external_id,
                        objects.token_participant.external_id, objects.context.text])
    return world
