"""Insight pages, figures and API: what a researcher sees, in few queries, and only for their studies."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from elicitation.models import StudyCollaborator
from modeling.analytics_services import study_analytics_compute
from modeling.models import AnalyticsSnapshot
from tests.factories import UserFactory
from tests.modeling.insight_planted import InsightStudy, insight_study_create

pytestmark = pytest.mark.django_db

PAGES = ["/insight/", "/insight/quality/", "/insight/rankings/"]


@pytest.fixture
def analysed(researcher: Any) -> InsightStudy:
    planted = insight_study_create(owner=researcher)
    assert study_analytics_compute(study_id=planted.study.pk).status == "done"
    return planted


@pytest.fixture
def owner_client(client: Client, researcher: Any) -> Client:
    client.force_login(researcher)
    return client


def _url(planted: InsightStudy, tail: str) -> str:
    return f"/studies/{planted.study.slug}{tail}"


@pytest.mark.parametrize("tail", PAGES)
def test_pages_read_only_the_cached_snapshot(
    analysed: InsightStudy, owner_client: Client, tail: str, django_assert_max_num_queries: Any,
) -> None:
    with django_assert_max_num_queries(6):
        response = owner_client.get(_url(analysed, tail))
    assert response.status_code == 200
    assert b"Insight" in response.content


def test_dashboard_shows_agreement_groups_and_divisive_pairs(analysed: InsightStudy, owner_client: Client) -> None:
    html = owner_client.get(_url(analysed, "/insight/")).content.decode()
    for text in ("Krippendorff", "Group 1", "Group 2", "Cramér", "Divisive pairs", "Bridging responses", "<svg"):
        assert text in html
    assert f'href="/studies/{analysed.study.slug}/insight/plots/map.png"' in html
    assert "Recompute analysis" in html


def test_dashboard_lists_flagged_participants(analysed: InsightStudy, owner_client: Client) -> None:
    html = owner_client.get(_url(analysed, "/insight/")).content.decode()
    card = html[html.index('id="flagged-heading"'):html.index('id="agreement-heading"')]
    assert "random-clicker" in card and "unreliable" in card and "fails-checks" in card
    assert "minority-" not in card and "majority-" not in card


def test_quality_page_lists_flagged_participants_first(analysed: InsightStudy, owner_client: Client) -> None:
    html = owner_client.get(_url(analysed, "/insight/quality/")).content.decode()
    first_rows = html[html.index("<tbody>"):][:6000]
    assert "random-clicker" in first_rows and "fails-checks" in first_rows
    assert html.index("random-clicker") < html.index("minority-0")
    assert "Exclude by rule" in html


def test_map_can_be_coloured_by_an_attribute_as_an_htmx_fragment(analysed: InsightStudy, owner_client: Client) -> None:
    response = owner_client.get(_url(analysed, "/insight/?fragment=map&colour=country"), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert 'id="group-map"' in html and "map--country.svg" in html and "Participants by country" in html
    full = owner_client.get(_url(analysed, "/insight/?colour=country")).content.decode()
    assert "<html" in full and "map--country.svg" in full  # without JavaScript too


@pytest.mark.parametrize(("name", "content_type", "magic"), [
    ("map.svg", "image/svg+xml", b"<?xml"), ("agreement.png", "image/png", b"\x89PNG"),
    ("map--country.png", "image/png", b"\x89PNG"), ("divisive.svg", "image/svg+xml", b"<?xml"),
])
def test_figures_download_as_svg_and_png(
    analysed: InsightStudy, owner_client: Client, name: str, content_type: str, magic: bytes,
) -> None:
    response = owner_client.get(_url(analysed, f"/insight/plots/{name}"))
    assert response.status_code == 200 and response["Content-Type"] == content_type
    assert response.content.startswith(magic) and "attachment" in response["Content-Disposition"]


def test_unknown_figure_is_404(analysed: InsightStudy, owner_client: Client) -> None:
    assert owner_client.get(_url(analysed, "/insight/plots/nope.svg")).status_code == 404
    assert owner_client.get(_url(analysed, "/insight/plots/map--shoe-size.png")).status_code == 404


def test_another_researcher_gets_404_everywhere(analysed: InsightStudy, client: Client, other_researcher: Any) -> None:
    client.force_login(other_researcher)
    for tail in [*PAGES, "/insight/plots/map.svg", "/insight/progress/"]:
        assert client.get(_url(analysed, tail)).status_code == 404, tail
    assert client.post(_url(analysed, "/insight/recompute/")).status_code == 404
    participant = analysed.members["random"][0]
    assert client.post(_url(analysed, "/insight/quality/exclude/"),
                       {"participant": participant.pk, "reason": "x"}).status_code == 404
    api = APIClient()
    api.force_authenticate(other_researcher)
    assert api.get(f"/api/v1/studies/{analysed.study.slug}/analytics").status_code == 404


def test_viewers_read_but_cannot_recompute_or_exclude(analysed: InsightStudy, client: Client) -> None:
    viewer = UserFactory(username="victor")
    StudyCollaborator.objects.create(study=analysed.study, user=viewer, role="viewer")
    client.force_login(viewer)
    html = client.get(_url(analysed, "/insight/quality/")).content.decode()
    assert "random-clicker" in html and "Exclude by rule" not in html and "Recompute" not in html
    assert client.post(_url(analysed, "/insight/recompute/")).status_code == 404
    assert client.post(_url(analysed, "/insight/quality/exclude-by-rule/"), {"rule": "flagged"}).status_code == 404


def test_recompute_queues_one_computation_and_progress_polls_until_done(
    analysed: InsightStudy, owner_client: Client,
) -> None:
    response = owner_client.post(_url(analysed, "/insight/recompute/"))
    assert response.status_code == 302
    owner_client.post(_url(analysed, "/insight/recompute/"))  # a double click joins the queued one
    queued = AnalyticsSnapshot.objects.filter(study=analysed.study, status="queued")
    assert queued.count() == 1
    fragment = owner_client.get(_url(analysed, "/insight/progress/"), HTTP_HX_REQUEST="true")
    assert fragment.status_code == 200 and b'hx-trigger="every 1s"' in fragment.content
    page = owner_client.get(_url(analysed, "/insight/")).content.decode()
    assert 'aria-label="Analysis progress"' in page and "Divisive pairs" in page  # old results stay visible
    study_analytics_compute(study_id=analysed.study.pk, snapshot_id=queued.get().pk)
    done = owner_client.get(_url(analysed, "/insight/progress/"), HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and done["HX-Refresh"] == "true"


def test_a_failed_computation_is_explained(researcher: Any, owner_client: Client) -> None:
    from tests.factories import StudyFactory

    study = StudyFactory(owner=researcher)
    study_analytics_compute(study_id=study.pk)
    html = owner_client.get(f"/studies/{study.slug}/insight/").content.decode()
    assert "The latest analysis failed" in html and "No preference judgments yet" in html


def test_api_returns_the_snapshot_with_figure_links(
    analysed: InsightStudy, api_client: APIClient, django_assert_max_num_queries: Any,
) -> None:
    with django_assert_max_num_queries(4):
        response = api_client.get(f"/api/v1/studies/{analysed.study.slug}/analytics")
    assert response.status_code == 200
    body = response.json()
    assert body["k"] == 2 and len(body["participants"]) == 14
    assert body["plots"]["map"]["png"] == f"/api/v1/studies/{analysed.study.slug}/analytics/plots/map.png"
    assert body["reliability_method"].startswith("one-coin Dawid-Skene")
    for key in ("agreement", "association", "groups", "divisive", "bridging", "rankings"):
        assert key in body


def test_api_is_404_before_any_analysis(researcher: Any, api_client: APIClient) -> None:
    from tests.factories import StudyFactory

    study = StudyFactory(owner=researcher)
    assert api_client.get(f"/api/v1/studies/{study.slug}/analytics").status_code == 404


# --- time per judgment ------------------------------------------------------------------------

@pytest.fixture
def with_fast(researcher: Any) -> InsightStudy:
    planted = insight_study_create(owner=researcher, with_fast=True)
    assert study_analytics_compute(study_id=planted.study.pk).status == "done"
    return planted


def test_a_too_fast_participant_is_flagged_on_the_pages_and_in_the_api(
    with_fast: InsightStudy, owner_client: Client, api_client: APIClient,
) -> None:
    html = owner_client.get(_url(with_fast, "/insight/")).content.decode()
    card = html[html.index('id="flagged-heading"'):html.index('id="agreement-heading"')]
    assert "too-fast" in card and "too fast" in card and "s per judgment" in card
    quality = owner_client.get(_url(with_fast, "/insight/quality/")).content.decode()
    assert quality.index("too-fast") < quality.index("majority-0") and 'id="times-heading"' in quality

    rows = {p["external_id"]: p for p in api_client.get(f"/api/v1/studies/{with_fast.study.slug}/analytics").json()[
        "participants"]}
    fast = rows["too-fast"]
    assert fast["flags"] == ["too fast"] and fast["time_z"] < -3.5 and fast["median_seconds"] < 1
    # Only the planted one: the others' typical times vary (6-12 s) without being outliers.
    assert [name for name, p in rows.items() if "too fast" in p["flags"] or "slow" in p["flags"]] == ["too-fast"]
    figure = owner_client.get(_url(with_fast, "/insight/plots/times.svg"))
    assert figure.status_code == 200 and b"too fast" in figure.content


def test_too_fast_rule_excludes_only_the_fast_participant(with_fast: InsightStudy, owner_client: Client) -> None:
    from annotation.models import ParticipantExclusion

    response = owner_client.post(_url(with_fast, "/insight/quality/exclude-by-rule/"), {"rule": "too_fast"})
    assert response.status_code == 302
    exclusion = ParticipantExclusion.objects.get()
    assert exclusion.participant.external_id == "too-fast" and exclusion.rule == "too_fast"
    assert "Too fast" in exclusion.reason


# --- figures and recomputation through the API -----------------------------------------------

def test_api_serves_every_listed_figure_to_a_token_client(analysed: InsightStudy, api_client: APIClient) -> None:
    body = api_client.get(f"/api/v1/studies/{analysed.study.slug}/analytics").json()
    ranking = f"ranking--{body['rankings'][0]['prompt_id']}"
    assert {"map", "agreement", "reliability", "times", "divisive", "bridging", "group_sizes", "map--country",
            ranking} <= set(body["plots"])
    for name, fmt, content_type, magic in (("map", "svg", "image/svg+xml", b"<?xml"),
                                           ("reliability", "png", "image/png", b"\x89PNG"),
                                           ("bridging", "svg", "image/svg+xml", b"<?xml"),
                                           (ranking, "svg", "image/svg+xml", b"<?xml")):
        response = api_client.get(body["plots"][name][fmt])
        assert response.status_code == 200 and response["Content-Type"] == content_type, name
        assert response.content.startswith(magic) and "attachment" in response["Content-Disposition"]
    assert b"Bradley-Terry" in response.content  # the ranking figure, drawn on request
    assert api_client.get(f"/api/v1/studies/{analysed.study.slug}/analytics/plots/nope.png").status_code == 404


def test_rankings_page_links_each_prompts_figure(analysed: InsightStudy, owner_client: Client) -> None:
    html = owner_client.get(_url(analysed, "/insight/rankings/")).content.decode()
    prompt_id = analysed.pairs[0].prompt_id
    link = f"/studies/{analysed.study.slug}/insight/plots/ranking--{prompt_id}.png"
    assert link in html
    response = owner_client.get(link)
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")


def test_api_queues_a_recompute_and_reports_its_progress(analysed: InsightStudy, api_client: APIClient) -> None:
    base = f"/api/v1/studies/{analysed.study.slug}/analytics"
    first = api_client.post(base)
    assert first.status_code == 202 and first.json()["status"] == "queued"
    again = api_client.post(base)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    state = api_client.get(f"{base}/status").json()
    assert state["id"] == first.json()["id"] and state["status"] == "queued" and state["progress"] == 0
    study_analytics_compute(study_id=analysed.study.pk, snapshot_id=first.json()["id"])
    done = api_client.get(f"{base}/status").json()
    assert done["status"] == "done" and done["progress"] == 1.0


def test_api_figures_and_recompute_are_404_for_others_and_viewers(analysed: InsightStudy) -> None:
    slug = analysed.study.slug
    outsider = APIClient()
    outsider.force_authenticate(UserFactory(username="oscar"))
    assert outsider.get(f"/api/v1/studies/{slug}/analytics/plots/map.svg").status_code == 404
    assert outsider.get(f"/api/v1/studies/{slug}/analytics/status").status_code == 404
    assert outsider.post(f"/api/v1/studies/{slug}/analytics").status_code == 404
    viewer = UserFactory(username="vera")
    StudyCollaborator.objects.create(study=analysed.study, user=viewer, role="viewer")
    reader = APIClient()
    reader.force_authenticate(viewer)
    assert reader.get(f"/api/v1/studies/{slug}/analytics/plots/map.svg").status_code == 200
    assert reader.post(f"/api/v1/studies/{slug}/analytics").status_code == 404
    assert not AnalyticsSnapshot.objects.filter(study=analysed.study, status="queued").exists()
