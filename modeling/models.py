"""What we learn: cached embeddings, training runs, the current model per study, annotator weights."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotation.models import Participant
from elicitation.models import MoralContext, Study


class TextEmbedding(models.Model):
    """Embedding cache keyed by text hash + embedding model; reused by every training run."""

    text_hash = models.CharField(max_length=64)
    model_name = models.CharField(max_length=200)
    dim = models.PositiveIntegerField()
    vector = models.BinaryField(help_text="float32, little-endian, `dim` values")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["text_hash", "model_name"], name="uniq_embedding")]


    def __str__(self) -> str:
        return f"{self.model_name}:{self.text_hash[:12]}"

class TrainingRun(models.Model):
    class Kind(models.TextChoices):
        BTL = "btl", "Bradley-Terry (one reward for all)"
        PAL_A = "pal-a", "PAL-A ideal-point mixture"
        PAL_B = "pal-b", "PAL-B mixture of reward functions"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="training_runs")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.PAL_A)
    groups_requested = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Empty: chosen (1..8).")
    hyperparameters = models.JSONField(default=dict, blank=True)
    trigger = models.CharField(max_length=20, default="manual")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    data_count = models.PositiveIntegerField(default=0)
    data_hash = models.CharField(max_length=64, blank=True)
    groups_chosen = models.PositiveSmallIntegerField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    device = models.CharField(max_length=40, blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    artifact_path = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Handing the task to the broker is a step of its own, recorded so it can be redone: a queued
    # run with `enqueued_at` empty never reached the broker (it was down, or the process died right
    # after the commit) and the next retrain check sends it again (services.training_run_resend_due).
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="When the broker took the task.")
    enqueue_tried_at = models.DateTimeField(null=True, blank=True, help_text="The last attempt to send it.")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Never two runs at once for a study: the database refuses a second active run.
            models.UniqueConstraint(
                fields=["study"], condition=Q(status__in=["queued", "running"]), name="one_active_run_per_study"
            ),
        ]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.kind}, {self.status}) of {self.study_id}"


class StudyModel(models.Model):
    """The current model of a study (older runs are kept), and the retrain bookkeeping."""

    study = models.OneToOneField(Study, on_delete=models.CASCADE, related_name="model_state")
    current_run = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    judgments_at_last_request = models.PositiveIntegerField(default=0)
    retrain_every = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: the site default.")
    updated_at = models.DateTimeField(auto_now=True)


    def __str__(self) -> str:
        return f"Model state of study {self.study_id}"

class ParticipantWeights(models.Model):
    """An annotator's mix of the K prototypes under one run (on the simplex)."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="participant_weights")
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="model_weights")
    weights = models.JSONField()
    group = models.PositiveSmallIntegerField(help_text="argmax of the weights")
    n_judgments = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "participant"], name="uniq_run_participant")]

    def __str__(self) -> str:
        return f"Weights of {self.participant_id} in run {self.run_id}"


class MoralGraphSnapshot(models.Model):
    """One aggregation of a context's wiser-than votes: scored values and kept edges, as computed then."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="moral_graph_snapshots")
    context = models.ForeignKey(MoralContext, on_delete=models.CASCADE, related_name="graph_snapshots")
    created_at = models.DateTimeField(auto_now_add=True)
    nodes = models.JSONField(default=list, help_text='[{"id", "title", "score", "members"}]')
    edges = models.JSONField(default=list, help_text='[{"from", "to", "counts", "total", "likelihood", "entropy", "kept"}]')
    params = models.JSONField(default=dict, help_text="Thresholds and vote count the aggregation used.")
    vote_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["context", "-created_at"], name="moral_snapshot_latest_idx")]

    def __str__(self) -> str:
        return f"Moral graph of context {self.context_id} at {self.created_at}"


class PairScores(models.Model):
    """Per-prototype P(a ≻ b) of every pool pair under one run, cached so serving needs no forward pass.

    `pair_ids` are the pairs' ids (int64, little-endian, ascending) and `proto_probs` the matching
    `[n, k]` float32 matrix (row-major, little-endian) of P(response_a ≻ response_b | prototype)
    in the pair's canonical order; `prompt_ids` the prompt of each pair. `prior` is the run's population mixture (k float64), the
    posterior an annotator starts from.
    """

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="pair_scores")
    run = models.OneToOneField(TrainingRun, on_delete=models.CASCADE, related_name="pair_scores")
    created_at = models.DateTimeField(auto_now_add=True)
    k = models.PositiveSmallIntegerField()
    n_pairs = models.PositiveIntegerField()
    pair_ids = models.BinaryField(help_text="int64 little-endian, ascending")
    prompt_ids = models.BinaryField(help_text="int64 little-endian: the prompt of each pair (prompt balance)")
    proto_probs = models.BinaryField(help_text="float32 little-endian, [n_pairs, k] row-major")
    prior = models.JSONField(help_text="The run's population weights (k numbers).")
    # The hypotheses of information gain (modeling.core.selection.particles_from_weights): M weight
    # vectors (the training annotators', merged past a bound, plus the K pure prototypes), their prior,
    # and P(a ≻ b) of every pool pair under each. Empty for rows stored before they existed: serving
    # then ranges over the K prototypes.
    particles = models.JSONField(default=list, blank=True, help_text="[M][k] mixture weights.")
    particle_prior = models.JSONField(default=list, blank=True, help_text="M prior probabilities.")
    particle_probs = models.BinaryField(default=b"", blank=True, help_text="float32 little-endian, [n_pairs, M]")
    tie_nu = models.FloatField(null=True, blank=True, help_text="Davidson's tie parameter ν (None: no ties).")

    def __str__(self) -> str:
        return f"Pair scores of run {self.run_id} ({self.n_pairs} pairs, K={self.k})"


class AnalyticsSnapshot(models.Model):
    """One computation of a study's insight dashboard (quality, agreement, groups, rankings), cached.

    `data` is what the API returns; `plots` holds the server-rendered SVG figures by name, kept
    apart so the API and the page can each load only what they show.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="analytics_snapshots")
    run = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True)
    plots = models.JSONField(default=dict, blank=True, help_text='{"name": "<svg…>"}')
    error = models.TextField(blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One computation at a time per study: a second "Recompute" joins the active one.
            models.UniqueConstraint(
                fields=["study"], condition=Q(status__in=["queued", "running"]), name="one_active_analytics_per_study"
            ),
        ]
        indexes = [models.Index(fields=["study", "status", "-created_at"], name="analytics_latest_idx")]

    def __str__(self) -> str:
        return f"Analytics {self.pk} ({self.status}) of study {self.study_id}"
