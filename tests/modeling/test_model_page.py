"""The study's model page, its live progress fragment, retraining, downloads, and the runs API."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils.html import escape
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from elicitation.models import StudyCollaborator
from modeling.core.models import RewardModel
from modeling.models import TrainingRun
from tests.factories import StudyFactory, UserFactory
from tests.modeling.conftest import PlantedStudy, run_sync

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_for(researcher: Any) -> Client:
    client = Client()
    client.force_login(researcher)
    return client


def _page(study_slug: str) -> str:
    return reverse("modeling:study_model", args=[study_slug])


def test_page_shows_the_current_model_against_btl(
    trained: tuple[PlantedStudy, TrainingRun], client_for: Client, django_assert_max_num_queries: Any,
) -> None:
    planted, run = trained
    with django_assert_max_num_queries(9):
        response = client_for.get(_page(planted.study.slug))
    assert response.status_code == 200
    html = response.content.decode()
    assert f"Current model: run {run.pk}" in html
    assert "BTL baseline" in html and "Worst-group accuracy" in html and "Calibration error" in html
    model_acc = round(run.metrics["held_out"]["model"]["accuracy"] * 100)
    assert f"{model_acc}%" in html
    assert "Group 1" in html and "Group 2" in html
    assert "Responses this group ranks highest" in html
    assert escape(run.metrics["top_responses"][0][0]["response"][:40]) in html
    assert html.count("<meter") == 12 * 2  # each annotator's weight on each group
    assert "formal-0" in html and "casual-5" in html
    assert reverse("modeling:download", args=[planted.study.slug, run.pk]) in html
    assert "Retrain now" in html and "Run history" in html
    assert 'hx-trigger="every 1s"' not in html  # nothing is training: no polling


def test_page_query_count_does_not_grow_with_runs(
    trained: tuple[PlantedStudy, TrainingRun], client_for: Client, django_assert_max_num_queries: Any,
) -> None:
    planted, _ = trained
    for _ in range(3):
        TrainingRun.objects.create(study=planted.study, status="failed", error="boom")
    with django_assert_max_num_queries(9):
        assert client_for.get(_page(planted.study.slug)).status_code == 200


def test_page_without_a_model_says_so(researcher: Any, client_for: Client) -> None:
    study = StudyFactory(owner=researcher)
    html = client_for.get(_page(study.slug)).content.decode()
    assert "No model yet" in html and "No training runs yet" in html


def test_a_failed_run_shows_its_reason(researcher: Any, client_for: Client) -> None:
    study = StudyFactory(owner=researcher)
    run_sync(study=study)
    html = client_for.get(_page(study.slug)).content.decode()
    assert "The latest training run" in html and "failed" in html
    assert "Not enough judgments to train a reward model" in html


def test_an_active_run_shows_a_polled_progress_bar(planted: PlantedStudy, client_for: Client) -> None:
    run = TrainingRun.objects.create(study=planted.study, status="running", progress=0.42,
                                     progress_message="pal-a: training K=2")
    html = client_for.get(_page(planted.study.slug)).content.decode()
    assert 'hx-trigger="every 1s"' in html and reverse("modeling:progress", args=[planted.study.slug]) in html
    fragment = client_for.get(reverse("modeling:progress", args=[planted.study.slug]), HTTP_HX_REQUEST="true")
    assert fragment.status_code == 200
    body = fragment.content.decode()
    assert f"Training run {run.pk}: running" in body and 'value="42"' in body and "training K=2" in body
    assert "<html" not in body  # only the fragment


def test_polling_stops_and_the_page_refreshes_when_no_run_is_active(
    trained: tuple[PlantedStudy, TrainingRun], client_for: Client,
) -> None:
    planted, _ = trained
    response = client_for.get(reverse("modeling:progress", args=[planted.study.slug]), HTTP_HX_REQUEST="true")
    assert response.status_code == 286 and response["HX-Refresh"] == "true"


def test_progress_link_without_htmx_goes_to_the_page(planted: PlantedStudy, client_for: Client) -> None:
    response = client_for.get(reverse("modeling:progress", args=[planted.study.slug]))
    assert response.status_code == 302 and response["Location"] == _page(planted.study.slug)


def test_retrain_now_queues_one_run(planted: PlantedStudy, client_for: Client, researcher: Any) -> None:
    url = reverse("modeling:train", args=[planted.study.slug])
    response = client_for.post(url, {"kind": "pal-b", "groups": "3"})
    assert response.status_code == 302
    run = TrainingRun.objects.get(study=planted.study)
    assert (run.status, run.kind, run.groups_requested, run.trigger, run.requested_by) == (
        "queued", "pal-b", 3, "manual", researcher)
    again = client_for.post(url, {"kind": "btl", "groups": "auto"}, follow=True)
    assert "already queued" in again.content.decode()
    assert TrainingRun.objects.filter(study=planted.study).count() == 1


def test_retrain_with_bad_choices_queues_nothing(planted: PlantedStudy, client_for: Client) -> None:
    response = client_for.post(reverse("modeling:train", args=[planted.study.slug]), {"kind": "gpt", "groups": "2"},
                               follow=True)
    assert "Choose a model" in response.content.decode()
    assert not TrainingRun.objects.exists()


def test_download_is_a_zip_that_modeling_core_loads(
    trained: tuple[PlantedStudy, TrainingRun], client_for: Client, tmp_path: Path,
) -> None:
    planted, run = trained
    response = client_for.get(reverse("modeling:download", args=[planted.study.slug, run.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert f'filename="{planted.study.slug}-run-{run.pk}.zip"' in response["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        archive.extractall(tmp_path / "unzipped")
    model = RewardModel.load(tmp_path / "unzipped" / f"{planted.study.slug}-run-{run.pk}")
    assert model.k == 2 and model.kind == "pal-a"


def test_a_run_without_files_has_no_download(planted: PlantedStudy, client_for: Client) -> None:
    run = TrainingRun.objects.create(study=planted.study, status="failed")
    assert client_for.get(reverse("modeling:download", args=[planted.study.slug, run.pk])).status_code == 404


def test_other_researchers_get_404_everywhere(trained: tuple[PlantedStudy, TrainingRun], other_researcher: Any) -> None:
    planted, run = trained
    client = Client()
    client.force_login(other_researcher)
    slug = planted.study.slug
    assert client.get(_page(slug)).status_code == 404
    assert client.get(reverse("modeling:progress", args=[slug]), HTTP_HX_REQUEST="true").status_code == 404
    assert client.post(reverse("modeling:train", args=[slug]), {"kind": "btl", "groups": "auto"}).status_code == 404
    assert client.get(reverse("modeling:download", args=[slug, run.pk])).status_code == 404
    assert TrainingRun.objects.filter(study=planted.study).count() == 1


def test_a_viewer_sees_the_model_but_cannot_retrain(trained: tuple[PlantedStudy, TrainingRun]) -> None:
    planted, _ = trained
    viewer = UserFactory(username="viewer")
    StudyCollaborator.objects.create(study=planted.study, user=viewer, role=StudyCollaborator.Role.VIEWER)
    client = Client()
    client.force_login(viewer)
    html = client.get(_page(planted.study.slug)).content.decode()
    assert "Current model" in html and "Retrain now" not in html
    response = client.post(reverse("modeling:train", args=[planted.study.slug]), {"kind": "btl", "groups": "auto"})
    assert response.status_code == 404


def test_anonymous_visitors_are_sent_to_log_in(planted: PlantedStudy) -> None:
    response = Client().get(_page(planted.study.slug))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- /api/v1/studies/<slug>/training-runs and /api/v1/training-runs/<id> ---------------------


def test_api_lists_runs_newest_first(
    trained: tuple[PlantedStudy, TrainingRun], api_client: APIClient, django_assert_max_num_queries: Any,
) -> None:
    planted, run = trained
    failed = TrainingRun.objects.create(study=planted.study, status="failed", error="boom")
    with django_assert_max_num_queries(4):
        response = api_client.get(f"/api/v1/studies/{planted.study.slug}/training-runs")
    assert response.status_code == 200
    runs = response.json()
    assert [r["id"] for r in runs] == [failed.pk, run.pk]
    assert runs[1]["is_current"] and not runs[0]["is_current"]
    assert runs[1]["download_url"].endswith(f"/api/v1/training-runs/{run.pk}/model.zip")
    assert runs[0]["download_url"] is None and "metrics" not in runs[0]


def test_api_requests_a_run_then_refuses_a_second(planted: PlantedStudy, api_client: APIClient) -> None:
    url = f"/api/v1/studies/{planted.study.slug}/training-runs"
    response = api_client.post(url, {"kind": "pal-a", "groups": 2, "hyperparameters": {"epochs": 50}}, format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "queued" and body["groups_requested"] == 2 and body["hyperparameters"] == {"epochs": 50}
    conflict = api_client.post(url, {"kind": "btl"}, format="json")
    assert conflict.status_code == 409
    assert conflict.json()["run"]["id"] == body["id"] and "already queued" in conflict.json()["detail"]


@pytest.mark.parametrize("payload", [{"kind": "gpt"}, {"groups": 12}, {"hyperparameters": {"epochs": -1}},
                                     {"hyperparameters": {"warp": 9}}])
def test_api_refuses_bad_run_requests(planted: PlantedStudy, api_client: APIClient, payload: dict[str, Any]) -> None:
    response = api_client.post(f"/api/v1/studies/{planted.study.slug}/training-runs", payload, format="json")
    assert response.status_code == 400 and response.json()["detail"] == "Invalid input."
    assert not TrainingRun.objects.exists()


def test_api_run_detail_has_the_metrics(trained: tuple[PlantedStudy, TrainingRun], api_client: APIClient) -> None:
    _, run = trained
    response = api_client.get(f"/api/v1/training-runs/{run.pk}")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "done" and body["groups_chosen"] == 2 and body["is_current"]
    assert body["metrics"]["held_out"]["model"]["accuracy"] == run.metrics["held_out"]["model"]["accuracy"]


def test_api_downloads_the_model_zip(trained: tuple[PlantedStudy, TrainingRun], api_client: APIClient) -> None:
    _, run = trained
    response = api_client.get(f"/api/v1/training-runs/{run.pk}/model.zip")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert {Path(n).name for n in names} == {"config.json", "weights.pt", "polyphony.json"}


def test_api_hides_runs_of_other_researchers(trained: tuple[PlantedStudy, TrainingRun], other_researcher: Any) -> None:
    planted, run = trained
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=other_researcher).key}")
    assert client.get(f"/api/v1/training-runs/{run.pk}").status_code == 404
    assert client.get(f"/api/v1/training-runs/{run.pk}/model.zip").status_code == 404
    assert client.get(f"/api/v1/studies/{planted.study.slug}/training-runs").status_code == 404
    assert client.post(f"/api/v1/studies/{planted.study.slug}/training-runs", {}, format="json").status_code == 404


def test_api_viewer_may_read_but_not_request(trained: tuple[PlantedStudy, TrainingRun]) -> None:
    planted, _ = trained
    viewer = UserFactory(username="viewer")
    StudyCollaborator.objects.create(study=planted.study, user=viewer, role=StudyCollaborator.Role.VIEWER)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=viewer).key}")
    assert client.get(f"/api/v1/studies/{planted.study.slug}/training-runs").status_code == 200
    assert client.post(f"/api/v1/studies/{planted.study.slug}/training-runs", {}, format="json").status_code == 404
