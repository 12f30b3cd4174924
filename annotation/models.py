"""Who answers and what they said: participants, consent, survey answers, served pairs, judgments."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from elicitation.models import MoralContext, Pair, Response, Study, SurveyQuestion


class Participant(models.Model):
    """A study-scoped annotator. Created only once consent is given (a refusal stores no participant)."""

    class Source(models.TextChoices):
        PROLIFIC = "prolific", "Prolific"
        PID = "pid", "Recruitment id (pid)"
        ANONYMOUS = "anonymous", "Anonymous link"
        IMPORT = "import", "Imported comparisons"
        API = "api", "Participant API"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="participants")
    external_id = models.CharField(max_length=200)
    source = models.CharField(max_length=12, choices=Source.choices)
    platform_study_id = models.CharField(max_length=200, blank=True)
    platform_session_id = models.CharField(max_length=200, blank=True)
    attributes = models.JSONField(default=dict, blank=True, help_text="Demographics, keyed by survey key.")
    api_token_hash = models.CharField(max_length=64, blank=True, db_index=True)
    consented_at = models.DateTimeField(null=True, blank=True)
    survey_completed_at = models.DateTimeField(null=True, blank=True)
    instructions_seen_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    judgment_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["study", "external_id"], name="uniq_participant")]

    def __str__(self) -> str:
        return f"{self.external_id} in {self.study_id}"


class ConsentRefusal(models.Model):
    """The only thing stored when someone declines consent: that a refusal happened, and when."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="consent_refusals")
    declined_at = models.DateTimeField(auto_now_add=True)


    def __str__(self) -> str:
        return f"Consent declined for study {self.study_id} at {self.declined_at}"

class Withdrawal(models.Model):
    """A participant withdrew; their data were deleted. Kept so researchers can count withdrawals."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="withdrawals")
    withdrawn_at = models.DateTimeField(auto_now_add=True)
    judgments_removed = models.PositiveIntegerField(default=0)


    def __str__(self) -> str:
        return f"Withdrawal from study {self.study_id} at {self.withdrawn_at}"

class SurveyAnswer(models.Model):
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="survey_answers")
    question = models.ForeignKey(SurveyQuestion, on_delete=models.CASCADE, related_name="answers")
    value = models.JSONField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["participant", "question"], name="uniq_survey_answer")]


    def __str__(self) -> str:
        return f"{self.question_id}: {self.value}"

class ServedPair(models.Model):
    """One showing of a pool pair to one participant; its id is the one-time submission key."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="served_pairs")
    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="servings")
    left_response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    right_response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    policy = models.CharField(max_length=20, default="random")
    served_at = models.DateTimeField()
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["participant", "answered_at"], name="served_outstanding_idx")]


    def __str__(self) -> str:
        return f"Served {self.pair_id} to {self.participant_id}"

class Judgment(models.Model):
    """A comparison. `response_a` is the response shown first (left); `choice` is relative to it."""

    class Choice(models.TextChoices):
        A = "a", "A"
        B = "b", "B"
        TIE = "tie", "Tie"

    class Origin(models.TextChoices):
        ANNOTATED = "annotated", "Annotated here"
        IMPORTED = "imported", "Imported"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="judgments")
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="judgments")
    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="judgments")
    served_pair = models.OneToOneField(
        ServedPair, null=True, blank=True, on_delete=models.CASCADE, related_name="judgment"
    )
    response_a = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    response_b = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    choice = models.CharField(max_length=3, choices=Choice.choices)
    strength = models.PositiveSmallIntegerField(null=True, blank=True)
    rationale = models.TextField(blank=True)
    policy = models.CharField(max_length=20, blank=True)
    is_attention_check = models.BooleanField(default=False)
    attention_passed = models.BooleanField(null=True, blank=True)
    origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.ANNOTATED)
    external_id = models.CharField(max_length=200, blank=True)
    served_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "external_id"], condition=~Q(external_id=""), name="uniq_judgment_external_id"
            ),
            models.CheckConstraint(condition=Q(choice__in=["a", "b", "tie"]), name="judgment_choice_valid"),
        ]
        indexes = [
            models.Index(fields=["study", "answered_at"], name="judgment_study_time_idx"),
            models.Index(fields=["participant", "answered_at"], name="judgment_participant_idx"),
        ]

    def __str__(self) -> str:
        return f"Judgment {self.pk}: {self.choice}"


class ExportJob(models.Model):
    """A big export written by a Celery task to storage, with progress for the page."""

    class Format(models.TextChoices):
        JSONL = "jsonl", "JSONL (comparison format)"
        CSV = "csv", "CSV"
        PARQUET = "parquet", "Parquet"
        PREFERENCE = "preference", "Preference training (prompt/chosen/rejected)"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="export_jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    format = models.CharField(max_length=12, choices=Format.choices)
    include_attention_checks = models.BooleanField(default=False)
    pseudonymize = models.BooleanField(default=False)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    total_rows = models.PositiveIntegerField(default=0)
    rows_written = models.PositiveIntegerField(default=0)
    # Incremented by each claim; a fencing token as on TrainingRun: a redelivered task takes over a
    # job left running by a dead worker, and the older attempt's later writes are refused.
    attempts = models.PositiveSmallIntegerField(default=0)
    file_path = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # As on TrainingRun: a queued job with `enqueued_at` empty never reached the broker (it was
    # down, or the process died after the commit); looking at the job sends it again
    # (exports.export_jobs_resend_due, config.task_resend).
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="When the broker took the task.")
    enqueue_tried_at = models.DateTimeField(null=True, blank=True, help_text="The last attempt to send it.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Export {self.pk} ({self.format}, {self.status})"

    @property
    def waiting_for_broker(self) -> bool:
        """Queued, and the last attempt to hand its task to the broker failed."""
        return self.status == self.Status.QUEUED and self.enqueued_at is None and self.enqueue_tried_at is not None

    @property
    def progress(self) -> float:
        if self.status == self.Status.DONE:
            return 1.0
        return self.rows_written / self.total_rows if self.total_rows else 0.0


# --- Moral graph elicitation (Klingefjord, Lowe & Edelman 2024) ------------------------------------


class ValuesCard(models.Model):
    """A value as a participant articulated it for one context: title, description, attention policies.

    A participant's card row is created when a context is assigned to them (status `interview`), so
    the rows double as the record of which contexts a participant may see. `canonical` points at the
    card this one was merged into (by the participant choosing a near card, or by a researcher); a
    card with no `canonical` is its own canonical card, and its `members` are the cards merged into it.
    """

    class Status(models.TextChoices):
        INTERVIEW = "interview", "Interview in progress"
        DRAFT = "draft", "Card drafted, being edited"
        REVIEW = "review", "Confirmed, checking similar cards"
        CONFIRMED = "confirmed", "Confirmed"

    class Backend(models.TextChoices):
        GUIDED = "guided", "Guided interview"
        LLM = "llm", "LLM interviewer"
        RESEARCHER = "researcher", "Written by a researcher"

    context = models.ForeignKey(MoralContext, on_delete=models.CASCADE, related_name="values_cards")
    participant = models.ForeignKey(
        Participant, null=True, blank=True, on_delete=models.CASCADE, related_name="values_cards",
        help_text="Empty for cards a researcher seeded.",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.INTERVIEW)
    title = models.CharField(max_length=120, blank=True)
    description = models.TextField(blank=True)
    attention_policies = models.JSONField(default=list, blank=True)
    embedding = models.BinaryField(null=True, blank=True, help_text="float32, little-endian")
    embedding_model = models.CharField(max_length=200, blank=True)
    canonical = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="members",
        help_text="The card this one was merged into; empty for a canonical card.",
    )
    interview_backend = models.CharField(max_length=10, choices=Backend.choices, default=Backend.GUIDED)
    transcript = models.JSONField(default=list, blank=True, help_text='[{"role", "content", "at"}], oldest first')
    interview_notice = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["participant", "context"], condition=Q(participant__isnull=False),
                name="uniq_values_card_per_context",
            ),
        ]
        indexes = [models.Index(fields=["context", "status"], name="values_card_context_idx")]

    def __str__(self) -> str:
        return self.title or f"Values card {self.pk} ({self.status})"


class UpgradeStory(models.Model):
    """A short story of someone moving from one value to another: what a wiser-than vote is about."""

    class Author(models.TextChoices):
        RESEARCHER = "researcher", "Researcher"
        PARTICIPANT = "participant", "Participant"
        LLM = "llm", "LLM"

    context = models.ForeignKey(MoralContext, on_delete=models.CASCADE, related_name="upgrade_stories")
    from_card = models.ForeignKey(ValuesCard, on_delete=models.CASCADE, related_name="+")
    to_card = models.ForeignKey(ValuesCard, on_delete=models.CASCADE, related_name="+")
    text = models.TextField()
    author_kind = models.CharField(max_length=12, choices=Author.choices)
    author_participant = models.ForeignKey(
        Participant, null=True, blank=True, on_delete=models.CASCADE, related_name="upgrade_stories"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=~Q(from_card=models.F("to_card")), name="story_two_cards"),
        ]

    def __str__(self) -> str:
        return f"Story {self.from_card_id} → {self.to_card_id}"


class WiserVote(models.Model):
    """A participant's answer to "is value B a wiser way to handle this context than value A?"."""

    class Answer(models.TextChoices):
        WISER = "wiser", "B is wiser"
        NOT_WISER = "not_wiser", "B is not wiser"
        EQUAL = "equal", "Equally wise"
        UNSURE = "unsure", "Unsure"

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="wiser_votes")
    context = models.ForeignKey(MoralContext, on_delete=models.CASCADE, related_name="wiser_votes")
    from_card = models.ForeignKey(ValuesCard, on_delete=models.CASCADE, related_name="+")
    to_card = models.ForeignKey(ValuesCard, on_delete=models.CASCADE, related_name="+")
    story = models.ForeignKey(UpgradeStory, null=True, blank=True, on_delete=models.SET_NULL, related_name="votes")
    story_text = models.TextField(blank=True, help_text="The story as shown (stories may be edited later).")
    answer = models.CharField(max_length=10, choices=Answer.choices)
    reason = models.TextField(blank=True)
    submission_id = models.UUIDField(unique=True, help_text="Client-generated: a retried submit stores nothing new.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["participant", "from_card", "to_card"], name="uniq_wiser_vote"),
            models.CheckConstraint(
                condition=Q(answer__in=["wiser", "not_wiser", "equal", "unsure"]), name="wiser_vote_answer_valid"
            ),
        ]
        indexes = [models.Index(fields=["context", "from_card", "to_card"], name="wiser_vote_edge_idx")]

    def __str__(self) -> str:
        return f"{self.from_card_id} → {self.to_card_id}: {self.answer}"


class LegitimacyAnswer(models.Model):
    """The closing questions of moral-graph mode: are my values represented, was the process fair."""

    class Choice(models.TextChoices):
        YES = "yes", "Yes"
        NO = "no", "No"
        UNSURE = "unsure", "Not sure"

    participant = models.OneToOneField(Participant, on_delete=models.CASCADE, related_name="legitimacy_answer")
    values_represented = models.CharField(max_length=8, choices=Choice.choices)
    process_fair = models.CharField(max_length=8, choices=Choice.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Legitimacy of {self.participant_id}: {self.values_represented}/{self.process_fair}"


class ParticipantExclusion(models.Model):
    """A researcher's decision to leave a participant's judgments out of training and exports.

    Revoking sets `revoked_at` rather than deleting, so the record of who was excluded, why and
    when survives; a participant is excluded while an unrevoked row exists (at most one).
    """

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="exclusions")
    reason = models.CharField(max_length=300)
    rule = models.CharField(max_length=40, blank=True, help_text="Empty: excluded by hand.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["participant"], condition=Q(revoked_at__isnull=True), name="one_active_exclusion"
            ),
        ]

    def __str__(self) -> str:
        return f"Exclusion of {self.participant_id}{' (revoked)' if self.revoked_at else ''}"
