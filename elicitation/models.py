"""What a study asks: studies, prompts, responses, the pair pool, the demographics survey."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q


def content_hash(text: str) -> str:
    """Hash used to de-duplicate re-imported prompts and responses (exact text, NFC not applied)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Study(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    class RationaleMode(models.TextChoices):
        OFF = "off", "Off"
        OPTIONAL = "optional", "Optional"
        REQUIRED = "required", "Required"

    class MoralGraphMode(models.TextChoices):
        OFF = "off", "Off: pairwise judgments only"
        ALONGSIDE = "alongside", "Alongside pairwise judgments (values first)"
        ONLY = "only", "Moral graph only"

    class SelectionPolicy(models.TextChoices):
        RANDOM = "random", "Random (coverage first)"
        UNCERTAINTY = "uncertainty", "Uncertainty"
        INFORMATION_GAIN = "information_gain", "Information gain"
        DISAGREEMENT = "disagreement", "Disagreement"
        MIXED = "mixed", "Mixed (information gain + coverage)"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="studies")
    title = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    description = models.TextField(blank=True)
    consent_text = models.TextField(blank=True, help_text="Shown before anything is stored.")
    instructions = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    judgments_per_participant = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(10_000)]
    )
    overlap_target = models.PositiveIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(1_000)],
        help_text="Target number of judgments per pair.",
    )
    allow_ties = models.BooleanField(default=True)
    strength_labels = models.JSONField(
        default=list, blank=True,
        help_text='Labels of the strength scale, weakest first, e.g. ["slightly", "clearly", "much"]. Empty: no strength.',
    )
    rationale_mode = models.CharField(max_length=10, choices=RationaleMode.choices, default=RationaleMode.OPTIONAL)
    completion_code = models.CharField(max_length=64, blank=True)
    redirect_url = models.URLField(blank=True, help_text="Where participants go after the completion page.")
    selection_policy = models.CharField(
        max_length=20, choices=SelectionPolicy.choices, default=SelectionPolicy.RANDOM
    )
    mixed_epsilon = models.FloatField(
        default=0.2, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="With the mixed policy: the share of pairs served for coverage rather than information gain.",
    )
    consistency_repeats = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(100)],
        help_text="How many pairs each participant has answered are asked again (in a new left/right order) "
        "to measure self-consistency; they count towards the judgments per participant.",
    )
    moral_graph_mode = models.CharField(
        max_length=10, choices=MoralGraphMode.choices, default=MoralGraphMode.OFF,
        help_text="Moral graph elicitation: values cards and wiser-than votes per context.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return self.title

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.OPEN

    @property
    def uses_strength(self) -> bool:
        return bool(self.strength_labels)


class StudyCollaborator(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer"
        EDITOR = "editor", "Editor"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="collaborators")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="collaborations")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["study", "user"], name="uniq_collaborator")]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) on {self.study}"


class Prompt(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="prompts")
    text = models.TextField()
    content_hash = models.CharField(max_length=64)
    external_id = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["study", "content_hash"], name="uniq_prompt_text")]

    def __str__(self) -> str:
        return self.text[:60]


class Response(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses")
    text = models.TextField()
    content_hash = models.CharField(max_length=64)
    source = models.CharField(max_length=200, blank=True, help_text="e.g. the model that wrote it")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["prompt", "content_hash"], name="uniq_response_text")]

    def __str__(self) -> str:
        return self.text[:60]


class Pair(models.Model):
    """A pool pair. Stored canonically (response_a.id < response_b.id); display order is per serving."""

    class Origin(models.TextChoices):
        POOL = "pool", "Generated pool"
        RESEARCHER = "researcher", "Added by researcher"
        IMPORT = "import", "From imported comparisons"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="pairs")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="pairs")
    response_a = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    response_b = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    origin = models.CharField(max_length=12, choices=Origin.choices, default=Origin.POOL)
    is_attention_check = models.BooleanField(default=False)
    correct_response = models.ForeignKey(
        Response, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
        help_text="For attention checks: the response a careful annotator prefers.",
    )
    judgment_count = models.PositiveIntegerField(default=0, help_text="Denormalised for coverage-first serving.")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["response_a", "response_b"], name="uniq_pair"),
            models.CheckConstraint(condition=Q(response_a__lt=F("response_b")), name="pair_canonical_order"),
            models.CheckConstraint(
                condition=Q(is_attention_check=False) | Q(correct_response__isnull=False),
                name="attention_check_has_answer",
            ),
        ]
        indexes = [models.Index(fields=["study", "judgment_count"], name="pair_coverage_idx")]

    def __str__(self) -> str:
        return f"Pair {self.pk} ({self.response_a_id} vs {self.response_b_id})"


class SurveyQuestion(models.Model):
    class Kind(models.TextChoices):
        CHOICE = "choice", "Single choice"
        MULTI_CHOICE = "multi_choice", "Multiple choice"
        NUMBER = "number", "Number"
        TEXT = "text", "Free text"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="survey_questions")
    key = models.SlugField(max_length=50, help_text="Attribute name in exports, e.g. age_group.")
    text = models.CharField(max_length=500)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    choices = models.JSONField(default=list, blank=True, help_text="Options for (multi) choice questions.")
    required = models.BooleanField(default=True)
    min_value = models.FloatField(null=True, blank=True)
    max_value = models.FloatField(null=True, blank=True)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["study", "key"], name="uniq_survey_key")]

    def __str__(self) -> str:
        return self.text


class MoralQuestion(models.Model):
    """A situation participants reflect on in moral-graph mode, e.g. "A user asks for advice about …"."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="moral_questions")
    text = models.TextField()
    position = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.text[:60]


class MoralContext(models.Model):
    """One consideration a question raises; values cards, votes and the moral graph are per context."""

    question = models.ForeignKey(MoralQuestion, on_delete=models.CASCADE, related_name="contexts")
    text = models.CharField(max_length=500)
    position = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.text[:60]
