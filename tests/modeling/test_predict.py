"""Predictions from a study's current model: service, command and API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import Judgment
from modeling.models import TextEmbedding, TrainingRun
from modeling.services import NoTrainedModelError, PredictionItem, preferences_predict
from tests.factories import ParticipantFactory, StudyFactory
from tests.modeling.conftest import PlantedStudy

pytestmark = pytest.mark.django_db


def _item(planted: PlantedStudy, annotator: str, *, formal_first: bool = True, topic: int = 0) -> PredictionItem:
    formal, casual = planted.formal[2 * topic], planted.casual[2 * topic]
    a, b = (formal, casual) if formal_first else (casual, formal)
    return PredictionItem(annotator=annotator, prompt=formal.prompt.text, response_a=a.text, response_b=b.text)


def _newcomer(planted: PlantedStudy, external_id: str, *, likes_formal: bool, count: int = 8) -> None:
    """An annotator who joined after the model was trained."""
    participant = ParticipantFactory(study=planted.study, external_id=external_id)
    formal_ids = {r.pk for r in planted.formal}
    Judgment.objects.bulk_create([
        Judgment(study=planted.study, participant=participant, pair=pair, response_a=pair.response_a,
                 response_b=pair.response_b, answered_at=timezone.now(),
                 choice="a" if (pair.response_a_id in formal_ids) == likes_formal else "b")
        for pair in planted.pairs[:count]
    ])


def test_training_annotators_get_their_own_preferences(trained: tuple[PlantedStudy, TrainingRun]) -> None:
    planted, _ = trained
    items = [_item(planted, "formal-1", topic=t) for t in range(4)] + [_item(planted, "casual-1", topic=t)
                                                                      for t in range(4)]
    p = preferences_predict(study=planted.study, items=items)
    assert sum(p[:4]) / 4 > 0.6 and sum(p[4:]) / 4 < 0.4


def test_swapping_the_responses_swaps_the_probability(trained: tuple[PlantedStudy, TrainingRun]) -> None:
    planted, _ = trained
    forward, backward = preferences_predict(study=planted.study, items=[
        _item(planted, "formal-2"), _item(planted, "formal-2", formal_first=False),
    ])
    assert forward + backward == pytest.approx(1.0, abs=1e-6)


def test_an_annotator_unseen_by_the_run_is_personalised_from_their_judgments(
    trained: tuple[PlantedStudy, TrainingRun],
) -> None:
    planted, _ = trained
    _newcomer(planted, "new-formal", likes_formal=True)
    _newcomer(planted, "new-casual", likes_formal=False)
    items = [_item(planted, who, topic=t) for who in ("new-formal", "new-casual", "stranger") for t in range(4)]
    p = preferences_predict(study=planted.study, items=items)
    new_formal, new_casual, stranger = (sum(p[i:i + 4]) / 4 for i in (0, 4, 8))
    assert new_formal > 0.6 and new_casual < 0.4
    # Nobody without judgments gets the population mixture, in between the two groups.
    assert new_casual < stranger < new_formal
    assert TrainingRun.objects.filter(study=planted.study).count() == 1  # the shared model was not retrained


def test_annotators_without_judgments_all_get_the_population_mixture(
    trained: tuple[PlantedStudy, TrainingRun],
) -> None:
    planted, _ = trained
    a, b = preferences_predict(study=planted.study, items=[_item(planted, "nobody"), _item(planted, "")])
    assert a == pytest.approx(b)


def test_texts_never_seen_are_embedded_through_the_cache(trained: tuple[PlantedStudy, TrainingRun]) -> None:
    planted, _ = trained
    before = TextEmbedding.objects.count()
    item = PredictionItem(annotator="formal-0", prompt="Any tips for hiking?",
                          response_a="It is advisable to plan your route carefully and to carry sufficient water.",
                          response_b="lol just walk up the hill, easy 🏔️")
    [p] = preferences_predict(study=planted.study, items=[item])
    assert 0.0 <= p <= 1.0
    assert TextEmbedding.objects.count() == before + 2


def test_a_study_without_a_model_says_so(researcher: Any) -> None:
    study = StudyFactory(owner=researcher)
    with pytest.raises(NoTrainedModelError, match="has no trained model yet"):
        preferences_predict(study=study, items=[PredictionItem("a", "p", "x", "y")])


def test_missing_model_files_are_reported(trained: tuple[PlantedStudy, TrainingRun], settings: Any) -> None:
    planted, run = trained
    (Path(settings.MEDIA_ROOT) / run.artifact_path / "weights.pt").unlink()
    with pytest.raises(NoTrainedModelError, match="missing"):
        preferences_predict(study=planted.study, items=[_item(planted, "formal-0")])


# --- The predict_preferences command ----------------------------------------------------------


def _jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_command_writes_each_line_with_p_a(trained: tuple[PlantedStudy, TrainingRun], tmp_path: Path) -> None:
    planted, _ = trained
    records = [{**_item(planted, who).__dict__, "note": "kept"} for who in ("formal-0", "casual-0", "stranger")]
    source = _jsonl(tmp_path / "pairs.jsonl", records)
    out = tmp_path / "out.jsonl"
    call_command("predict_preferences", planted.study.slug, str(source), "-o", str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [{k: v for k, v in line.items() if k != "p_a"} for line in lines] == records
    assert lines[0]["p_a"] > 0.5 > lines[1]["p_a"]
    assert not list(tmp_path.glob(".out.jsonl.*"))


def test_command_reports_bad_lines_and_writes_nothing(
    trained: tuple[PlantedStudy, TrainingRun], tmp_path: Path,
) -> None:
    planted, _ = trained
    good = _item(planted, "formal-0").__dict__
    source = _jsonl(tmp_path / "pairs.jsonl", [
        good, {k: v for k, v in good.items() if k != "prompt"}, "{not json", {**good, "response_b": 3}, "[1, 2]",
    ])
    out = tmp_path / "out.jsonl"
    with pytest.raises(CommandError) as excinfo:
        call_command("predict_preferences", planted.study.slug, str(source), "-o", str(out))
    message = str(excinfo.value)
    assert "line 2: missing field(s): prompt" in message
    assert "line 3: not valid JSON" in message
    assert "line 4: response_b must be a string" in message
    assert "line 5: expected a JSON object" in message
    assert "line 1" not in message
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name != "media"] == ["pairs.jsonl"]


def test_command_without_a_model_fails_clearly(researcher: Any, tmp_path: Path) -> None:
    study = StudyFactory(owner=researcher)
    source = _jsonl(tmp_path / "pairs.jsonl", [{"annotator": "a", "prompt": "p", "response_a": "x", "response_b": "y"}])
    with pytest.raises(CommandError, match="no trained model"):
        call_command("predict_preferences", study.slug, str(source), "-o", str(tmp_path / "out.jsonl"))
    assert not (tmp_path / "out.jsonl").exists()


def test_command_names_an_unknown_study(db: None, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="No study with slug 'nope'"):
        call_command("predict_preferences", "nope", str(tmp_path / "x.jsonl"), "-o", str(tmp_path / "o.jsonl"))


# --- POST /api/v1/studies/<slug>/predict ------------------------------------------------------


def test_api_predicts_one_item(trained: tuple[PlantedStudy, TrainingRun], api_client: APIClient) -> None:
    planted, run = trained
    item = _item(planted, "formal-0").__dict__
    response = api_client.post(f"/api/v1/studies/{planted.study.slug}/predict", item, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["p_a"] > 0.5 and body["run"] == run.pk and body["annotator"] == "formal-0"


def test_api_predicts_a_batch(trained: tuple[PlantedStudy, TrainingRun], api_client: APIClient) -> None:
    planted, _ = trained
    items = [_item(planted, "formal-0").__dict__, _item(planted, "casual-0").__dict__]
    response = api_client.post(f"/api/v1/studies/{planted.study.slug}/predict", {"items": items}, format="json")
    assert response.status_code == 200
    answers = response.json()["items"]
    assert [a["annotator"] for a in answers] == ["formal-0", "casual-0"]
    assert answers[0]["p_a"] > 0.5 > answers[1]["p_a"]


def test_api_names_each_bad_item(trained: tuple[PlantedStudy, TrainingRun], api_client: APIClient) -> None:
    planted, _ = trained
    good = _item(planted, "formal-0").__dict__
    response = api_client.post(f"/api/v1/studies/{planted.study.slug}/predict",
                               {"items": [good, {"annotator": "x"}, "text"]}, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"items[1]", "items[2]"} and "missing field(s)" in errors["items[1]"]
    empty = api_client.post(f"/api/v1/studies/{planted.study.slug}/predict", {"items": []}, format="json")
    assert empty.status_code == 400


def test_api_without_a_model_is_a_conflict(researcher: Any, api_client: APIClient) -> None:
    study = StudyFactory(owner=researcher)
    item = {"annotator": "a", "prompt": "p", "response_a": "x", "response_b": "y"}
    response = api_client.post(f"/api/v1/studies/{study.slug}/predict", item, format="json")
    assert response.status_code == 409
    assert "no trained model" in response.json()["detail"]


def test_api_hides_another_researchers_study(trained: tuple[PlantedStudy, TrainingRun], other_researcher: Any) -> None:
    planted, _ = trained
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=other_researcher).key}")
    response = client.post(f"/api/v1/studies/{planted.study.slug}/predict", _item(planted, "formal-0").__dict__,
                           format="json")
    assert response.status_code == 404


def test_api_requires_authentication(trained: tuple[PlantedStudy, TrainingRun]) -> None:
    planted, _ = trained
    response = APIClient().post(f"/api/v1/studies/{planted.study.slug}/predict", {}, format="json")
    assert response.status_code in (401, 403)
