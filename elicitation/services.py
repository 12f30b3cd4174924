"""Writes for studies: configuration, the demographics survey, attention checks, status, collaborators.

Every function validates everything first and raises `django.core.exceptions.ValidationError`
(field-keyed where a field is to blame) before anything is written; writes that touch more than
one row run in one `transaction.atomic`, so a bad request leaves nothing half-written.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction
from django.db.models import CharField, Value
from django.db.models.functions import Cast, Concat

from elicitation.models import Pair, Prompt, Response, Study, StudyCollaborator, SurveyQuestion, content_hash
from elicitation.selectors import study_slug_is_fixed

# The fields a researcher configures (forms and API). Status has its own transition rules
# (`study_set_status`), and the owner is set once, at creation.
STUDY_CONFIG_FIELDS: tuple[str, ...] = (
    "title", "slug", "description", "consent_text", "instructions", "judgments_per_participant",
    "overlap_target", "allow_ties", "strength_labels", "rationale_mode", "completion_code", "redirect_url",
    "selection_policy", "mixed_epsilon", "consistency_repeats",
)
# `/studies/new/` is the create page and is routed before `/studies/<slug>/`: a study called
# "new" could never be reached.
RESERVED_SLUGS = frozenset({"new"})
STRENGTH_LABELS_MAX = 7
STRENGTH_LABEL_MAX_LENGTH = 40
SURVEY_CHOICE_MAX_LENGTH = 200
SURVEY_QUESTIONS_MAX = 50
CHOICE_KINDS = frozenset({SurveyQuestion.Kind.CHOICE, SurveyQuestion.Kind.MULTI_CHOICE})

_STATUS_TRANSITIONS: dict[str, frozenset[str]] = {
    Study.Status.DRAFT: frozenset({Study.Status.OPEN, Study.Status.CLOSED}),
    Study.Status.OPEN: frozenset({Study.Status.CLOSED}),
    Study.Status.CLOSED: frozenset({Study.Status.OPEN}),
}


@dataclass(frozen=True)
class SurveyQuestionSpec:
    """One survey question as the researcher wants it. `id` names an existing row to update
    (the page's formset knows ids); without it a question is matched to an existing one by `key`."""

    key: str
    text: str
    kind: str
    choices: list[str] = field(default_factory=list)
    required: bool = True
    min_value: float | None = None
    max_value: float | None = None
    position: int | None = None
    id: int | None = None


# --- studies -----------------------------------------------------------------------------------


def study_create(
    *, owner: AbstractBaseUser, values: Mapping[str, Any], survey_questions: Sequence[SurveyQuestionSpec] = ()
) -> Study:
    """Create a draft study (and its survey). A blank completion code gets a random one, so a
    participant who finishes always has something to paste back into the recruitment platform."""
    _config_fields_check(values)
    study = Study(owner=owner, status=Study.Status.DRAFT, **values)
    if not study.completion_code:
        study.completion_code = completion_code_new()
    _study_validate(study)
    questions = survey_questions_validate(questions=survey_questions)
    try:
        with transaction.atomic():
            study.save()
            _survey_questions_sync(study=study, questions=questions)
    except IntegrityError:
        # Two requests raced for the same slug; the loser gets the same error validation gives.
        if Study.objects.filter(slug=study.slug).exists():
            raise ValidationError({"slug": "A study with this slug already exists."}) from None
        raise
    return study


def study_update(
    *,
    study: Study,
    values: Mapping[str, Any],
    survey_questions: Sequence[SurveyQuestionSpec] | None = None,
    status: str | None = None,
) -> Study:
    """Change a study's configuration; optionally replace its survey and change its status, all or nothing.

    Returns a fresh instance (the one passed in may have been modified by a form and is not saved).
    A completion code set to blank gets a new random one, as at creation.
    """
    _config_fields_check(values)
    if "completion_code" in values and not values["completion_code"]:
        values = {**values, "completion_code": completion_code_new()}
    questions = None if survey_questions is None else survey_questions_validate(questions=survey_questions)
    with transaction.atomic():
        # The row lock serialises two editors saving at once, so the checks below see the truth.
        current = Study.objects.select_for_update().get(pk=study.pk)
        _study_change_check(study=current, values=values)
        for name, value in values.items():
            setattr(current, name, value)
        _study_validate(current)
        current.save()
        if questions is not None:
            _survey_questions_sync(study=current, questions=questions)
        if status is not None:
            _status_transition(study=current, status=status)
    return current


def study_set_status(*, study: Study, status: str) -> Study:
    """Open, close or reopen a study. Asking for the status it already has changes nothing
    (a double-clicked "Open" button is not an error)."""
    with transaction.atomic():
        current = Study.objects.select_for_update().get(pk=study.pk)
        _status_transition(study=current, status=status)
    return current


def completion_code_new() -> str:
    """Eight upper-case hex characters: short enough to type, too many to guess (4 * 10^9)."""
    return secrets.token_hex(4).upper()


def strength_labels_parse(*, text: str) -> list[str]:
    """`"slightly, clearly, much"` -> `["slightly", "clearly", "much"]` (empty text: no scale)."""
    return [label.strip() for label in text.split(",") if label.strip()]


def _config_fields_check(values: Mapping[str, Any]) -> None:
    unknown = set(values) - set(STUDY_CONFIG_FIELDS)
    if unknown:
        # A caller bug, not user input: forms and serializers only pass known fields.
        raise TypeError(f"Not study configuration fields: {sorted(unknown)}")


def _study_validate(study: Study) -> None:
    errors: dict[str, list[str]] = {}
    try:
        study.full_clean()
    except ValidationError as exc:
        errors = dict(exc.message_dict)
    if study.slug in RESERVED_SLUGS:
        errors.setdefault("slug", []).append(f"“{study.slug}” is reserved; choose another slug.")
    label_errors = _strength_labels_errors(study.strength_labels)
    if label_errors:
        errors.setdefault("strength_labels", []).extend(label_errors)
    if errors:
        raise ValidationError(errors)


def _strength_labels_errors(labels: object) -> list[str]:
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        return ["The strength scale must be a list of labels."]
    if not labels:
        return []
    problems = []
    if len(labels) < 2:
        problems.append("A strength scale needs at least two labels (or none, for no scale).")
    if len(labels) > STRENGTH_LABELS_MAX:
        problems.append(f"A strength scale has at most {STRENGTH_LABELS_MAX} labels.")
    if any(not label.strip() for label in labels):
        problems.append("Strength labels cannot be blank.")
    if any(len(label) > STRENGTH_LABEL_MAX_LENGTH for label in labels):
        problems.append(f"Strength labels have at most {STRENGTH_LABEL_MAX_LENGTH} characters.")
    if len({label.strip().lower() for label in labels}) != len(labels):
        problems.append("Strength labels must all differ.")
    return problems


def _study_change_check(*, study: Study, values: Mapping[str, Any]) -> None:
    """Refuse changes that would break what already exists: shared links and stored answers."""
    errors: dict[str, str] = {}
    new_slug = values.get("slug", study.slug)
    if new_slug != study.slug and study_slug_is_fixed(study=study):
        errors["slug"] = (
            "The slug can only change while the study is a draft without participants: "
            "participant links already use it."
        )
    new_labels = values.get("strength_labels", study.strength_labels)
    if (
        isinstance(new_labels, list)
        and len(new_labels) != len(study.strength_labels)
        and study.judgments.filter(strength__isnull=False).exists()
    ):
        # Stored strengths are positions on the scale (1..n); another length changes their meaning.
        errors["strength_labels"] = (
            f"Judgments with a strength are stored on this {len(study.strength_labels)}-point scale; "
            "you may rename its labels but not change how many there are."
        )
    if errors:
        raise ValidationError(errors)


def _status_transition(*, study: Study, status: str) -> None:
    """Move a locked study to `status` (compare-and-swap on the old status)."""
    if status not in Study.Status.values:
        raise ValidationError({"status": f"Unknown status “{status}”."})
    if status == study.status:
        return
    if status not in _STATUS_TRANSITIONS[study.status]:
        raise ValidationError({"status": f"A {study.get_status_display().lower()} study cannot become {status}."})
    if status == Study.Status.OPEN and not study.pairs.filter(is_attention_check=False).exists():
        raise ValidationError(
            {"status": "Import prompts and responses before opening the study: it has no pairs to show."}
        )
    changed = Study.objects.filter(pk=study.pk, status=study.status).update(status=status)
    if changed != 1:  # pragma: no cover - the row is locked by the caller
        raise ValidationError({"status": "The study changed meanwhile; reload and try again."})
    study.status = status


# --- survey ------------------------------------------------------------------------------------


def survey_questions_save(*, study: Study, questions: Sequence[SurveyQuestionSpec]) -> list[SurveyQuestion]:
    """Replace a study's survey with `questions` (in that order). Questions left out are deleted,
    unless participants already answered them."""
    validated = survey_questions_validate(questions=questions)
    with transaction.atomic():
        Study.objects.select_for_update().get(pk=study.pk)  # one survey editor at a time
        _survey_questions_sync(study=study, questions=validated)
    return list(study.survey_questions.all())


def survey_questions_validate(*, questions: Sequence[SurveyQuestionSpec]) -> list[SurveyQuestionSpec]:
    """Check every question (without touching the database) and return them normalised:
    surrounding blanks trimmed, positions filled in from the order given."""
    if len(questions) > SURVEY_QUESTIONS_MAX:
        raise ValidationError({"survey_questions": f"A survey has at most {SURVEY_QUESTIONS_MAX} questions."})
    errors: list[str] = []
    normalised: list[SurveyQuestionSpec] = []
    seen_keys: set[str] = set()
    for index, question in enumerate(questions, start=1):
        spec = replace(
            question,
            key=question.key.strip(),
            text=question.text.strip(),
            choices=[str(choice).strip() for choice in question.choices],
            position=index if question.position is None else question.position,
        )
        label = f"question {index}" + (f" ({spec.key})" if spec.key else "")
        errors.extend(f"{label}: {problem}" for problem in _survey_question_errors(spec))
        if spec.key in seen_keys:
            errors.append(f"{label}: the key “{spec.key}” is used twice; keys name columns in exports.")
        seen_keys.add(spec.key)
        normalised.append(spec)
    if errors:
        raise ValidationError({"survey_questions": errors})
    return normalised


def _survey_question_errors(spec: SurveyQuestionSpec) -> list[str]:
    problems = []
    if not spec.key:
        problems.append("a key is required.")
    else:
        try:
            validate_slug(spec.key)
        except ValidationError:
            problems.append("the key may contain only letters, digits, hyphens and underscores.")
        if len(spec.key) > 50:
            problems.append("the key has at most 50 characters.")
    if not spec.text:
        problems.append("the question text is required.")
    elif len(spec.text) > 500:
        problems.append("the question text has at most 500 characters.")
    if spec.kind not in SurveyQuestion.Kind.values:
        problems.append(f"unknown kind “{spec.kind}” (use one of {', '.join(SurveyQuestion.Kind.values)}).")
    if spec.kind in CHOICE_KINDS:
        choices = [choice for choice in spec.choices if choice]
        if len(set(choices)) < 2:
            problems.append("a choice question needs at least two different choices.")
        if len(choices) != len(spec.choices):
            problems.append("choices cannot be blank.")
        elif len(set(choices)) != len(choices):
            problems.append("choices must all differ.")
        if any(len(choice) > SURVEY_CHOICE_MAX_LENGTH for choice in choices):
            problems.append(f"choices have at most {SURVEY_CHOICE_MAX_LENGTH} characters.")
    elif spec.choices:
        problems.append("only choice questions have choices.")
    if spec.kind != SurveyQuestion.Kind.NUMBER and (spec.min_value is not None or spec.max_value is not None):
        problems.append("only number questions have a minimum or maximum.")
    if spec.min_value is not None and spec.max_value is not None and spec.min_value > spec.max_value:
        problems.append("the minimum is larger than the maximum.")
    if spec.position is not None and spec.position < 0:
        problems.append("the position cannot be negative.")
    return problems


def _survey_questions_sync(*, study: Study, questions: Sequence[SurveyQuestionSpec]) -> None:
    """Make the study's rows match `questions` (already validated). Runs inside a transaction."""
    existing = {question.pk: question for question in study.survey_questions.all()} if study.pk else {}
    by_key = {question.key: question for question in existing.values()}
    matched: dict[int, SurveyQuestionSpec] = {}
    new_specs: list[SurveyQuestionSpec] = []
    errors: list[str] = []
    for spec in questions:
        if spec.id is not None:
            if spec.id not in existing or spec.id in matched:
                errors.append(f"question {spec.key}: no such question in this study.")
                continue
            matched[spec.id] = spec
        elif spec.key in by_key and by_key[spec.key].pk not in matched:
            matched[by_key[spec.key].pk] = spec
        else:
            new_specs.append(spec)
    removed = [pk for pk in existing if pk not in matched]
    answered = set(
        SurveyQuestion.objects.filter(pk__in=[*removed, *matched], answers__isnull=False)
        .values_list("pk", flat=True)
        .distinct()
    )
    errors.extend(
        f"question {existing[pk].key}: participants have answered it, so it cannot be removed."
        for pk in removed if pk in answered
    )
    errors.extend(
        f"question {existing[pk].key}: participants have answered it, so its kind cannot change."
        for pk, spec in matched.items() if pk in answered and existing[pk].kind != spec.kind
    )
    if errors:
        raise ValidationError({"survey_questions": errors})

    SurveyQuestion.objects.filter(pk__in=removed).delete()
    renamed = [pk for pk, spec in matched.items() if existing[pk].key != spec.key]
    if renamed:
        # Park renamed rows on unique temporary keys first, so swapping two keys does not trip
        # the (study, key) unique constraint halfway through.
        SurveyQuestion.objects.filter(pk__in=renamed).update(
            key=Concat(Value("__renaming-"), Cast("pk", output_field=CharField()))
        )
    updated = []
    for pk, spec in matched.items():
        question = existing[pk]
        _survey_question_fill(question, spec)
        updated.append(question)
    SurveyQuestion.objects.bulk_update(
        updated, ["key", "text", "kind", "choices", "required", "min_value", "max_value", "position"]
    )
    created = []
    for spec in new_specs:
        question = SurveyQuestion(study=study)
        _survey_question_fill(question, spec)
        created.append(question)
    SurveyQuestion.objects.bulk_create(created)


def _survey_question_fill(question: SurveyQuestion, spec: SurveyQuestionSpec) -> None:
    question.key = spec.key
    question.text = spec.text
    question.kind = spec.kind
    question.choices = list(spec.choices)
    question.required = spec.required
    question.min_value = spec.min_value
    question.max_value = spec.max_value
    question.position = spec.position or 0


# --- attention checks --------------------------------------------------------------------------


def attention_check_add(*, study: Study, prompt_text: str, correct_text: str, wrong_text: str) -> Pair:
    """Add (or mark) a pair with a known correct answer. Prompts and responses are found by content
    hash, so adding the same check twice, or one built from pool responses, creates no duplicates."""
    errors = {}
    for name, text in (("prompt_text", prompt_text), ("correct_text", correct_text), ("wrong_text", wrong_text)):
        if not text.strip():
            errors[name] = "This text is required."
    if not errors and correct_text == wrong_text:
        errors["wrong_text"] = "The wrong response must differ from the correct one."
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        prompt, _ = Prompt.objects.get_or_create(
            study=study, content_hash=content_hash(prompt_text), defaults={"text": prompt_text}
        )
        correct, _ = Response.objects.get_or_create(
            prompt=prompt, content_hash=content_hash(correct_text),
            defaults={"text": correct_text, "source": "attention check"},
        )
        wrong, _ = Response.objects.get_or_create(
            prompt=prompt, content_hash=content_hash(wrong_text),
            defaults={"text": wrong_text, "source": "attention check"},
        )
        first, second = sorted([correct, wrong], key=lambda response: response.pk)
        pair, created = Pair.objects.select_for_update().get_or_create(
            response_a=first, response_b=second,
            defaults={
                "study": study, "prompt": prompt, "origin": Pair.Origin.RESEARCHER,
                "is_attention_check": True, "correct_response": correct,
            },
        )
        if not created and (not pair.is_attention_check or pair.correct_response_id != correct.pk):
            pair.is_attention_check = True
            pair.correct_response = correct
            pair.save(update_fields=["is_attention_check", "correct_response"])
    return pair


def attention_check_remove(*, pair: Pair) -> bool:
    """Stop using a pair as an attention check. A pair added only as a check and never served is
    deleted (its deliberately wrong response does not belong in the pool); otherwise it stays as an
    ordinary pair so the judgments it has keep their pair. Returns True when the pair was deleted."""
    with transaction.atomic():
        locked = Pair.objects.select_for_update().get(pk=pair.pk)
        if locked.origin == Pair.Origin.RESEARCHER and not locked.servings.exists() and not locked.judgments.exists():
            locked.delete()
            return True
        Pair.objects.filter(pk=locked.pk).update(is_attention_check=False, correct_response=None)
    return False


# --- collaborators -----------------------------------------------------------------------------


def collaborator_add(*, study: Study, user: AbstractBaseUser, role: str) -> StudyCollaborator:
    """Share a study (or change a collaborator's role)."""
    if role not in StudyCollaborator.Role.values:
        raise ValidationError({"role": f"Unknown role “{role}” (use viewer or editor)."})
    if user.pk == study.owner_id:
        raise ValidationError({"username": "The owner already has every right on the study."})
    collaborator, _ = StudyCollaborator.objects.update_or_create(study=study, user=user, defaults={"role": role})
    return collaborator


def collaborator_remove(*, study: Study, user: AbstractBaseUser) -> bool:
    """Stop sharing a study with `user`. Returns False when they were not a collaborator."""
    deleted, _ = StudyCollaborator.objects.filter(study=study, user=user).delete()
    return deleted > 0

