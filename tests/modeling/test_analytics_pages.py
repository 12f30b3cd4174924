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
    assert body["plots"]["map"]["png"] == f"/studies/{analysed.study.slug}/insight/plots/map.png"
    for key in ("agreement", "association", "groups", "divisive", "bridging", "rankings"):
        assert key in body


def test_api_is_404_before_any_analysis(researcher: Any, api_client: APIClient) -> None:
    from tests.factories import StudyFactory

    study = StudyFactory(owner=researcher)
    assert api_client.get(f"/api/v1/studies/{study.slug}/analytics").status_code == 404
