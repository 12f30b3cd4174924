"""The judgment page: one pair at a time, htmx swap or post/redirect/get, exactly once, query counts."""

from __future__ import annotations

import re
import uuid

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from annotation.models import Judgment, Participant, ServedPair
from elicitation.models import Study
from tests.factories import study_with_pool

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # The factories' researchers get hashed passwords; PBKDF2 costs ~1 s a test on this machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def judge_url(study: Study) -> str:
    return f"/s/{study.slug}/judge/"


def ready(client: Client, study: Study, pid: str = "PID-1") -> Participant:
    """Consent through the link, then mark the survey and instructions done."""
    client.get(f"/s/{study.slug}/?PROLIFIC_PID={pid}")
    client.post(f"/s/{study.slug}/consent/", {"decision": "agree"})
    participant = Participant.objects.get(study=study, external_id=pid)
    Participant.objects.filter(pk=participant.pk).update(
        survey_completed_at=timezone.now(), instructions_seen_at=timezone.now()
    )
    return participant


def served_id_in(html: str) -> str:
    """The one-time id in a rendered pair (fragments rendered for htmx carry no test context)."""
    match = re.search(r'name="served_id" value="([0-9a-f-]+)"', html)
    assert match, "no served id on the page"
    return match.group(1)


def answer(served: ServedPair, **overrides: object) -> dict[str, object]:
    return {"served_id": str(served.id), "choice": "a", "strength": "2", "rationale": "", **overrides}


def test_page_shows_the_prompt_both_responses_progress_and_the_one_time_id(client: Client) -> None:
    study = study_with_pool(judgments_per_participant=4)
    ready(client, study)
    page = client.get(judge_url(study))
    served = page.context["served"]
    text = page.text
    assert served.pair.prompt.text in text
    assert text.index(served.left_response.text) < text.index(served.right_response.text)
    assert f'<input type="hidden" name="served_id" value="{served.id}">' in text
    assert '<progress value="0" max="4"' in text and "0 of 4 done" in text
    assert "<kbd>1</kbd>" in text and "<kbd>2</kbd>" in text and "<kbd>0</kbd>" in text and "<kbd>Q</kbd>" in text
    assert 'hx-post="/s/' in text and 'action="/s/' in text  # works with and without JavaScript
    assert "annotation/judge.js" in text


def test_page_leaves_out_ties_strength_and_rationale_when_the_study_does(client: Client) -> None:
    study = study_with_pool(allow_ties=False, strength_labels=[], rationale_mode=Study.RationaleMode.OFF)
    ready(client, study)
    text = client.get(judge_url(study)).text
    assert 'value="tie"' not in text and 'name="strength"' not in text and "<textarea" not in text


def test_submit_without_javascript_redirects_to_the_next_pair(client: Client) -> None:
    study = study_with_pool()
    ready(client, study)
    served = client.get(judge_url(study)).context["served"]
    response = client.post(judge_url(study), answer(served, choice="b"))
    assert response.status_code == 302 and response.url == judge_url(study)
    following = client.get(response.url)
    assert following.context["served"].id != served.id and "1 of 10 done" in following.text
    assert Judgment.objects.get().choice == "b"


def test_submit_with_htmx_swaps_in_the_next_pair_fragment(client: Client) -> None:
    study = study_with_pool()
    ready(client, study)
    served = client.get(judge_url(study)).context["served"]
    response = client.post(judge_url(study), answer(served), **HTMX)
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div id="pair"') and "<html" not in response.text
    assert served_id_in(response.text) != str(served.id) and "1 of 10 done" in response.text
    assert Judgment.objects.count() == 1


def test_double_submit_stores_one_judgment(client: Client) -> None:
    study = study_with_pool()
    participant = ready(client, study)
    served = client.get(judge_url(study)).context["served"]
    first = client.post(judge_url(study), answer(served))
    second = client.post(judge_url(study), answer(served, choice="b"))
    assert first.status_code == second.status_code == 302
    again_htmx = client.post(judge_url(study), answer(served), **HTMX)
    assert "already recorded" in again_htmx.text
    assert Judgment.objects.count() == 1 and Judgment.objects.get().choice == "a"
    participant.refresh_from_db()
    assert participant.judgment_count == 1


def test_two_tabs_see_the_same_pair_and_never_double_count(client: Client) -> None:
    study = study_with_pool()
    participant = ready(client, study)
    other_tab = Client()
    other_tab.cookies = client.cookies  # same browser, same session cookie
    served_one = client.get(judge_url(study)).context["served"]
    served_two = other_tab.get(judge_url(study)).context["served"]
    assert served_one.id == served_two.id
    client.post(judge_url(study), answer(served_one, choice="a"), **HTMX)
    late = other_tab.post(judge_url(study), answer(served_two, choice="b"), **HTMX)
    assert late.status_code == 200 and "already recorded" in late.text
    assert Judgment.objects.count() == 1
    participant.refresh_from_db()
    assert participant.judgment_count == 1
    assert ServedPair.objects.filter(participant=participant, answered_at__isnull=True).count() == 1


def test_served_id_of_another_participant_gets_a_clear_error(client: Client) -> None:
    study = study_with_pool()
    ready(client, study, pid="owner")
    foreign = client.get(judge_url(study)).context["served"]
    intruder = Client()
    ready(intruder, study, pid="intruder")
    response = intruder.post(judge_url(study), answer(foreign))
    assert response.status_code == 404
    assert "That comparison was not shown to you" in response.text
    assert response.context["served"].participant.external_id == "intruder"  # their own pair instead
    assert not Judgment.objects.exists()


@pytest.mark.parametrize(("served_id", "status"), [(str(uuid.uuid4()), 404), ("not-a-uuid", 400), ("", 400)])
def test_stale_or_malformed_served_id_is_rejected(client: Client, served_id: str, status: int) -> None:
    study = study_with_pool()
    ready(client, study)
    client.get(judge_url(study))
    response = client.post(judge_url(study), {"served_id": served_id, "choice": "a", "strength": "1"}, **HTMX)
    assert response.status_code == status
    assert 'role="alert"' in response.text
    assert not Judgment.objects.exists()


def test_invalid_answer_shows_the_pair_again_with_errors_and_keeps_the_input(client: Client) -> None:
    study = study_with_pool(rationale_mode=Study.RationaleMode.REQUIRED)
    ready(client, study)
    served = client.get(judge_url(study)).context["served"]
    response = client.post(judge_url(study), answer(served, strength="", rationale=""))
    assert response.status_code == 422
    assert response.context["served"].id == served.id
    assert "Say how much better" in response.text and "Please say briefly why." in response.text
    assert 'value="a" required checked' in response.text
    too_long = client.post(judge_url(study), answer(served, rationale="y" * 5001), **HTMX)
    assert too_long.status_code == 422 and "it has 5001" in too_long.text and "y" * 5001 in too_long.text
    assert not Judgment.objects.exists()


def test_last_answer_sends_htmx_to_the_completion_page(client: Client) -> None:
    study = study_with_pool(judgments_per_participant=1)
    ready(client, study)
    served = client.get(judge_url(study)).context["served"]
    response = client.post(judge_url(study), answer(served), **HTMX)
    assert response.headers["HX-Redirect"] == f"/s/{study.slug}/done/"
    assert study.completion_code not in response.text


def test_page_needs_the_instructions_first(client: Client) -> None:
    study = study_with_pool()
    client.get(f"/s/{study.slug}/")
    client.post(f"/s/{study.slug}/consent/", {"decision": "agree"})
    assert client.get(judge_url(study)).url == f"/s/{study.slug}/instructions/"
    assert client.post(judge_url(study), {"served_id": str(uuid.uuid4()), "choice": "a"}).status_code == 302
    assert not ServedPair.objects.exists()


def test_empty_pool_says_so(client: Client) -> None:
    study = study_with_pool(prompts=0)
    ready(client, study)
    page = client.get(judge_url(study))
    assert page.status_code == 200 and "No comparisons are available right now" in page.text


def test_page_reads_but_never_rewrites_the_session_cookie(client: Client) -> None:
    study = study_with_pool()
    ready(client, study)
    served = client.get(judge_url(study)).context["served"]
    for response in (client.get(judge_url(study)), client.post(judge_url(study), answer(served), **HTMX)):
        assert settings.SESSION_COOKIE_NAME not in response.cookies


def test_judge_get_is_a_bounded_number_of_queries(client: Client, django_assert_num_queries) -> None:
    study = study_with_pool(prompts=20, responses_per_prompt=5)
    ready(client, study)
    # participant+study, outstanding (none), then under the lock: savepoint, lock, outstanding again,
    # choose, insert-and-load (on SQLite: load the pair, then insert), release
    with django_assert_num_queries(8 if connection.vendor == "postgresql" else 9):
        assert client.get(judge_url(study)).status_code == 200
    with django_assert_num_queries(2):  # the outstanding pair is shown again: participant+study, outstanding
        assert client.get(judge_url(study)).status_code == 200


def test_judge_post_is_a_bounded_number_of_queries(client: Client, django_assert_num_queries) -> None:
    study = study_with_pool(prompts=20, responses_per_prompt=5)
    ready(client, study)
    served = client.get(judge_url(study)).context["served"]
    # participant+study, then in a savepoint (the test runs in a transaction): on PostgreSQL one
    # statement claims, stores, counts and serves the next pair; SQLite claims, stores, counts the
    # pair and the participant one statement each
    postgres = connection.vendor == "postgresql"
    with django_assert_num_queries(4 if postgres else 7):
        assert client.post(judge_url(study), answer(served)).status_code == 302
    with django_assert_num_queries(2 if postgres else 9):  # post/redirect/get: PostgreSQL served it already
        served = client.get(judge_url(study)).context["served"]
    # htmx: the response is the next pair; SQLite serves it as pair_serve_next does (see above)
    with django_assert_num_queries(4 if postgres else 7 + 8):
        assert client.post(judge_url(study), answer(served), **HTMX).status_code == 200
