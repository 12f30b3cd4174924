"""Rate limits on the participant endpoints: past the rate a participant gets 429 with a JSON body
(API) or a "slow down" page (browser), nothing is stored, and other participants are unaffected.
The rates are settings (POLYPHONY_PARTICIPANT_RATE, POLYPHONY_PARTICIPANT_PAGE_RATE) so a load test
can raise them; the defaults leave an honest annotator alone."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from django.core.cache import cache

from annotation.models import Judgment
from tests.security.conftest import World


@pytest.fixture
def rates(settings: Any) -> Any:
    def set_rates(**rates: str | None) -> None:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **rates},
        }
        cache.clear()

    return set_rates


def test_default_rates_are_two_a_second_per_participant(settings: Any) -> None:
    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] == {"participant": "120/min",
                                                                 "participant_page": "120/min"}


def test_participant_api_past_its_rate_gets_429_with_a_json_body(world: World, rates: Any) -> None:
    rates(participant="3/min")
    client = world.client("participant_token")
    answers = [client.get("/api/v1/participant/next").status_code for _ in range(3)]

    refused = client.get("/api/v1/participant/next")
    submit = client.post("/api/v1/participant/judgments",
                         {"served_id": str(world.a.token_served.pk), "choice": "a", "strength": 1},
                         content_type="application/json")
    other = world.client("participant_other").get("/api/v1/participant/next")

    assert answers == [200, 200, 200]
    assert refused.status_code == 429 and refused["Content-Type"] == "application/json"
    assert "throttled" in refused.json()["detail"].lower() and int(refused["Retry-After"]) > 0
    assert submit.status_code == 429
    assert not Judgment.objects.filter(served_pair=world.a.token_served).exists()
    assert other.status_code == 200  # counted per participant, not per address


def test_an_honest_annotator_is_not_throttled_by_default(world: World) -> None:
    """Judgments as fast as the test client goes (far faster than reading): next + submit each."""
    participant, client = world.a.token_participant, world.client("participant_token")
    participant.study.judgments_per_participant = 12
    participant.study.save(update_fields=["judgments_per_participant"])
    statuses = []
    for _ in range(6):
        served = client.get("/api/v1/participant/next")
        statuses.append(served.status_code)
        statuses.append(client.post("/api/v1/participant/judgments",
                                    {"served_id": served.json()["served_id"], "choice": "b", "strength": 2},
                                    content_type="application/json").status_code)
    assert statuses == [200, 201] * 6


def test_judgment_page_past_its_rate_gets_429(world: World, rates: Any) -> None:
    rates(participant_page="2/min")
    type(world.a.study).objects.filter(pk=world.a.study.pk).update(moral_graph_mode="off")
    client = world.client("participant_session")
    url = f"/s/{world.a.study.slug}/judge/"
    bad = {"served_id": "not-a-uuid", "choice": "a"}  # counted like any answer, stores nothing
    assert [client.post(url, bad).status_code for _ in range(2)] == [400, 400]

    refused = client.post(url, {"served_id": str(world.a.served.pk), "choice": "a", "strength": "1"})

    assert refused.status_code == 429 and "Please slow down" in refused.content.decode()
    assert int(refused["Retry-After"]) > 0
    assert not Judgment.objects.filter(served_pair=world.a.served).exists()
    assert client.get(url).status_code == 200  # reading the page is not limited


def test_rates_come_from_the_environment_and_fail_loudly() -> None:
    code = "from django.conf import settings; print(settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'])"
    base = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                        env={**base, "POLYPHONY_PARTICIPANT_RATE": "5000/min", "POLYPHONY_PARTICIPANT_PAGE_RATE": "off"})
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**base, "POLYPHONY_PARTICIPANT_RATE": "lots"})
    assert ok.returncode == 0, ok.stderr
    assert "'participant': '5000/min'" in ok.stdout and "'participant_page': None" in ok.stdout
    assert bad.returncode != 0 and "POLYPHONY_PARTICIPANT_RATE" in bad.stderr
