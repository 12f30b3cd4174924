"""API of the reward models: predictions, training runs, model download. Under /api/v1/."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api_errors import FileOrJsonErrorRenderer
from elicitation.selectors import study_get_for_user
from modeling.models import TrainingRun
from modeling.selectors import (
    study_current_run_id,
    training_run_archive,
    training_run_current,
    training_run_get_for_user,
    training_run_list,
)
from modeling.services import (
    MAX_GROUPS,
    NoTrainedModelError,
    PredictionItem,
    TrainingQueueError,
    prediction_item_parse,
    preferences_predict,
    training_run_request,
)

# One request embeds at most this many new texts on the web process; bigger batches belong to
# the `predict_preferences` command.
MAX_PREDICTION_ITEMS = 10_000


class TrainingRunOutputSerializer(serializers.ModelSerializer):
    study = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    is_current = serializers.SerializerMethodField(help_text="Whether the study predicts with this run's model.")
    download_url = serializers.SerializerMethodField(help_text="The model folder as a .zip, once the run is done.")

    class Meta:
        model = TrainingRun
        ref_name = "TrainingRun"
        fields = [
            "id", "study", "kind", "groups_requested", "groups_chosen", "hyperparameters", "trigger", "status",
            "progress", "progress_message", "attempts", "data_count", "data_hash", "device", "duration_s", "error",
            "created_at", "started_at", "finished_at", "is_current", "download_url",
        ]

    def get_is_current(self, run: TrainingRun) -> bool:
        return run.pk == self.context.get("current_run_id")

    def get_download_url(self, run: TrainingRun) -> str | None:
        if run.status != TrainingRun.Status.DONE:
            return None
        url = reverse("api-training-run-download", kwargs={"run_id": run.pk})
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url


class TrainingRunDetailOutputSerializer(TrainingRunOutputSerializer):
    metrics = serializers.JSONField(
        help_text="Held-out metrics of the model and of the BTL baseline (`held_out.model`, `held_out.btl`), "
                  "group sizes, K selection, top responses per latent group."
    )

    class Meta(TrainingRunOutputSerializer.Meta):
        ref_name = "TrainingRunDetail"
        fields = [*TrainingRunOutputSerializer.Meta.fields, "metrics"]


class StudyTrainingRunsApi(APIView):
    class InputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=TrainingRun.Kind.choices, default=TrainingRun.Kind.PAL_A)
        groups = serializers.IntegerField(
            required=False, allow_null=True, min_value=1, max_value=MAX_GROUPS,
            help_text="K, the number of latent groups; null or absent: chosen automatically.",
        )
        hyperparameters = serializers.DictField(
            required=False, default=dict,
            help_text="Optional: epochs, lr, latent_dim, hidden_dim, max_groups, test_fraction, seed, …",
        )

        class Meta:
            ref_name = "TrainingRunRequestInput"

    @extend_schema(operation_id="study_training_runs_list", summary="A study's training runs, newest first",
                   responses={200: TrainingRunOutputSerializer(many=True)})
    def get(self, request: Request, slug: str) -> Response:
        study = study_get_for_user(slug=slug, user=request.user)
        runs = training_run_list(study=study)
        context = {"request": request, "current_run_id": study_current_run_id(study_id=study.pk)}
        return Response(TrainingRunOutputSerializer(runs, many=True, context=context).data)

    @extend_schema(
        operation_id="study_training_run_request",
        summary="Request a training run",
        description="202 with the queued run. 409 with the active run when one is already queued or running "
                    "(a study trains one model at a time). 503 when the task queue is unreachable.",
        request=InputSerializer,
        responses={202: TrainingRunOutputSerializer, 409: OpenApiResponse(description="A run is already active."),
                   503: OpenApiResponse(description="The training queue is unreachable.")},
    )
    def post(self, request: Request, slug: str) -> Response:
        study = study_get_for_user(slug=slug, user=request.user, edit=True)  # first: a 400 would leak the slug
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            run, created = training_run_request(
                study=study, kind=data["kind"], groups=data.get("groups"), trigger="api",
                requested_by=request.user, hyperparameters=data["hyperparameters"],
            )
        except ValidationError as exc:
            errors = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
            return Response({"detail": "Invalid input.", "errors": errors}, status=status.HTTP_400_BAD_REQUEST)
        except TrainingQueueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        context = {"request": request, "current_run_id": study_current_run_id(study_id=study.pk)}
        body = TrainingRunOutputSerializer(run, context=context).data
        if not created:
            return Response(
                {"detail": f"Run {run.pk} is already {run.status} for this study; it trains one model at a time.",
                 "run": body},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(body, status=status.HTTP_202_ACCEPTED)


class TrainingRunDetailApi(APIView):
    @extend_schema(operation_id="training_run_detail", summary="A training run: status, progress and metrics",
                   responses={200: TrainingRunDetailOutputSerializer})
    def get(self, request: Request, run_id: int) -> Response:
        run = training_run_get_for_user(run_id=run_id, user=request.user)
        context = {"request": request, "current_run_id": study_current_run_id(study_id=run.study_id)}
        return Response(TrainingRunDetailOutputSerializer(run, context=context).data)


class _ZipRenderer(FileOrJsonErrorRenderer):
    """Lets a client that asks for `application/zip` get the file rather than a 406."""

    media_type = "application/zip"
    format = "zip"


class TrainingRunDownloadApi(APIView):
    renderer_classes = [JSONRenderer, _ZipRenderer]

    @extend_schema(
        operation_id="training_run_download",
        summary="Download a finished run's model folder as a .zip",
        description="config.json (kind, K, dimensions, embedding model, annotator ids) and weights.pt: "
                    "`modeling.core.models.RewardModel.load(folder)` reads it without Django.",
        responses={(200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="The model folder."),
                   404: OpenApiResponse(description="No such run, or it has no saved model.")},
    )
    def get(self, request: Request, run_id: int) -> HttpResponse:
        run = training_run_get_for_user(run_id=run_id, user=request.user)
        archive = training_run_archive(run=run)
        if archive is None:
            raise Http404("This run has no saved model.")
        filename, payload = archive
        response = HttpResponse(payload, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


_ITEM_FIELDS = {
    "annotator": serializers.CharField(help_text="An annotator's external id (any string; unknown: population)."),
    "prompt": serializers.CharField(),
    "response_a": serializers.CharField(),
    "response_b": serializers.CharField(),
}


class StudyPredictApi(APIView):
    @extend_schema(
        operation_id="study_predict",
        summary="Probability that an annotator prefers response_a over response_b",
        description=(
            "Send one object or `{\"items\": [...]}` (at most 10,000). Each answer repeats the item with `p_a`, "
            "the probability (given no tie) that the annotator prefers `response_a`. Annotators of the training "
            "run use their learned weights; annotators with judgments in the study but not in the run are fitted "
            "from those judgments on the fly; anyone else gets the population mixture. 409 when the study has "
            "no trained model."
        ),
        request=inline_serializer("PredictionInput", fields={
            **_ITEM_FIELDS,
            "items": serializers.ListField(child=inline_serializer("PredictionItem", fields=_ITEM_FIELDS),
                                           required=False),
        }),
        responses={
            200: inline_serializer("PredictionOutput", fields={
                **_ITEM_FIELDS, "p_a": serializers.FloatField(), "run": serializers.IntegerField(),
            }),
            400: OpenApiResponse(description="Invalid items; `errors` names each one."),
            409: OpenApiResponse(description="The study has no trained model."),
        },
        examples=[OpenApiExample("One item", request_only=True, value={
            "annotator": "prolific-5f3a", "prompt": "How should I start running?",
            "response_a": "Begin with short, slow runs.", "response_b": "Just run as far as you can.",
        })],
    )
    def post(self, request: Request, slug: str) -> Response:
        study = study_get_for_user(slug=slug, user=request.user)
        body = request.data
        single = not (isinstance(body, dict) and "items" in body)
        raw = [body] if single else body["items"]
        if not isinstance(raw, list) or not raw:
            return _invalid({"items": "Must be a non-empty list of objects."})
        if len(raw) > MAX_PREDICTION_ITEMS:
            return _invalid({"items": f"At most {MAX_PREDICTION_ITEMS} items per request."})
        items: list[PredictionItem] = []
        errors: dict[str, str] = {}
        for i, record in enumerate(raw):
            try:
                items.append(prediction_item_parse(data=record))
            except ValueError as exc:
                errors["item" if single else f"items[{i}]"] = str(exc)
        if errors:
            return _invalid(errors)
        run = training_run_current(study=study)
        try:
            probabilities = preferences_predict(study=study, items=items)
        except NoTrainedModelError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        answers = [_answer(item, p, run) for item, p in zip(items, probabilities, strict=True)]
        return Response(answers[0] if single else {"items": answers})


def _answer(item: PredictionItem, p_a: float, run: TrainingRun | None) -> dict[str, Any]:
    return {
        "annotator": item.annotator, "prompt": item.prompt, "response_a": item.response_a,
        "response_b": item.response_b, "p_a": p_a, "run": run.pk if run else None,
    }


def _invalid(errors: dict[str, str]) -> Response:
    return Response({"detail": "Invalid input.", "errors": errors}, status=status.HTTP_400_BAD_REQUEST)
