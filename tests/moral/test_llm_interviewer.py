"""The LLM interviewer against a small OpenAI-compatible server the tests start on 127.0.0.1:
a conversation that ends in a drafted card, participant text only ever in the user role, and the
fall-back to the guided interview (with a message, nothing lost) on a timeout, an HTTP error and
malformed replies. Also LLM-drafted upgrade stories."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from annotation.interviewers import InterviewerUnavailable, interview_turn_parse
from annotation.models import UpgradeStory, ValuesCard
from annotation.moral_services import LLM_FALLBACK_NOTICE, upgrade_stories_draft
from tests.moral.conftest import CONTEXT, QUESTION, ValuesCardFactory, join, moral_study
from tests.moral.llm_server import FakeLLM, Reply, fake_llm_server

pytestmark = pytest.mark.django_db

CARD_JSON = json.dumps({"values_card": {
    "title": "Honest support",
    "description": "Being truthful about trade-offs while standing by the person.",
    "attention_policies": ["TRADE-OFFS the person may not have seen", "FEARS behind the question"],
}})
SECRET = "My mother has dementia and I am scared"  # participant text: must only ever be in "user"


@pytest.fixture
def llm(settings: Any) -> Iterator[FakeLLM]:
    with fake_llm_server() as fake:
        settings.POLYPHONY_LLM_BASE_URL = fake.base_url
        settings.POLYPHONY_LLM_MODEL = "test-model"
        settings.POLYPHONY_LLM_API_KEY = "test-key"
        settings.POLYPHONY_LLM_TIMEOUT = 5.0
        yield fake


def start_llm_interview(client: Client) -> tuple[str, ValuesCard]:
    study, _ = moral_study()
    participant = join(client, study)
    client.post(f"/s/{study.slug}/values/")
    card = ValuesCard.objects.get(participant=participant)
    assert card.interview_backend == ValuesCard.Backend.LLM
    return f"/s/{study.slug}/values/interview/{card.pk}/", card


def test_a_conversation_ends_in_a_drafted_card_with_participant_text_only_in_the_user_role(client, llm) -> None:
    url, card = start_llm_interview(client)
    page = client.get(url)
    assert page.status_code == 200 and "A short conversation about what matters" in page.text
    llm.script = [Reply(content="What would you want the assistant to notice first?"), Reply(content=CARD_JSON)]
    first = client.post(url, {"message": SECRET}, HTTP_HX_REQUEST="true")
    assert first.status_code == 200 and "What would you want the assistant to notice first?" in first.text
    second = client.post(url, {"message": "That I am not judged for considering it."})
    assert second.status_code == 302 and second.url.endswith(f"/values/card/{card.pk}/")
    card.refresh_from_db()
    assert card.status == ValuesCard.Status.DRAFT and card.title == "Honest support"
    assert card.attention_policies[0] == "TRADE-OFFS the person may not have seen"
    assert [t["role"] for t in card.transcript] == ["assistant", "user", "assistant", "user"]
    assert card.transcript[1]["content"] == SECRET
    # What went over the wire: researcher text in the system prompt, the participant only as "user".
    assert len(llm.requests) == 2 and llm.requests[0]["model"] == "test-model"
    for request in llm.requests:
        system = [m for m in request["messages"] if m["role"] == "system"]
        assert QUESTION in system[0]["content"] and CONTEXT in system[0]["content"]
        for message in request["messages"]:
            if SECRET in message["content"]:
                assert message["role"] == "user"
    assert [m["role"] for m in llm.messages(1)] == ["system", "assistant", "user", "assistant", "user"]
    # The drafted card is the starting point of the edit page.
    assert "Honest support" in client.get(second.url).text


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(content="Too late", delay_s=2.0), id="timeout"),
        pytest.param(Reply(status=500), id="http-500"),
        pytest.param(Reply(raw_body=b"<html>gateway error</html>"), id="not-json"),
        pytest.param(Reply(raw_body=b'{"object": "something else"}'), id="not-a-completion"),
        pytest.param(Reply(content=""), id="empty-content"),
        pytest.param(Reply(content='{"values_card": {"title": 3, "attention_policies": "x"}}'), id="bad-card"),
        pytest.param(Reply(content='{"values_card": {"title": "Unclosed'), id="broken-json"),
    ],
)
def test_a_failing_or_malformed_llm_falls_back_to_the_guided_interview_losing_nothing(
    client, llm, settings, reply: Reply
) -> None:
    settings.POLYPHONY_LLM_TIMEOUT = 0.5
    url, card = start_llm_interview(client)
    client.get(url)
    llm.script = [reply]
    response = client.post(url, {"message": SECRET})
    assert response.status_code == 302 and response.url == url
    card.refresh_from_db()
    assert card.status == ValuesCard.Status.INTERVIEW
    assert card.interview_backend == ValuesCard.Backend.GUIDED
    assert card.transcript[-1] == {**card.transcript[-1], "role": "user", "content": SECRET}
    page = client.get(url)
    assert LLM_FALLBACK_NOTICE.split(",")[0] in page.text
    assert "What should a good response attend to?" in page.text
    assert SECRET in page.text  # their words start the guided form
    # The guided interview then finishes the card, keeping the earlier conversation.
    done = client.post(url, {"answer_0": SECRET + ". I want honesty.", "answer_1": "", "answer_2": ""})
    assert done.url.endswith(f"/values/card/{card.pk}/")
    card.refresh_from_db()
    assert [t["content"] for t in card.transcript if t["role"] == "user"][0] == SECRET


def test_the_participant_may_switch_to_the_fixed_questions(client, llm) -> None:
    url, card = start_llm_interview(client)
    client.get(url)
    response = client.post(url, {"action": "guided"})
    assert response.url == url
    card.refresh_from_db()
    assert card.interview_backend == ValuesCard.Backend.GUIDED and llm.requests == []


def test_an_empty_or_huge_message_is_refused_and_the_llm_is_not_called(client, llm) -> None:
    url, card = start_llm_interview(client)
    client.get(url)
    assert client.post(url, {"message": "   "}).status_code == 422
    huge = client.post(url, {"message": "w" * 5000})
    assert huge.status_code == 422 and "it has 5000" in huge.text
    card.refresh_from_db()
    assert [t["role"] for t in card.transcript] == ["assistant"] and llm.requests == []


def test_an_unreachable_endpoint_falls_back_too(client, settings) -> None:
    settings.POLYPHONY_LLM_BASE_URL = "http://127.0.0.1:9/v1"  # discard port: connection refused
    settings.POLYPHONY_LLM_MODEL = "test-model"
    url, card = start_llm_interview(client)
    client.get(url)
    assert client.post(url, {"message": SECRET}).url == url
    card.refresh_from_db()
    assert card.interview_backend == ValuesCard.Backend.GUIDED and card.transcript[-1]["content"] == SECRET


def test_llm_drafts_stories_for_edges_without_one(llm) -> None:
    study, [context] = moral_study()
    a = ValuesCardFactory(context=context, title="Rules first", description=SECRET)
    b = ValuesCardFactory(context=context, title="Care first")
    UpgradeStory.objects.create(context=context, from_card=a, to_card=b, text="Written.", author_kind="researcher")
    llm.script = [Reply(content="I used to care about care. Then I saw rules protect people too.")]
    assert upgrade_stories_draft(context_id=context.pk) == 1
    story = UpgradeStory.objects.get(author_kind=UpgradeStory.Author.LLM)
    assert (story.from_card, story.to_card) == (b, a)
    [request] = llm.requests
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert SECRET in request["messages"][1]["content"] and SECRET not in request["messages"][0]["content"]


def test_reply_parsing_accepts_questions_and_fenced_cards_and_refuses_the_rest() -> None:
    assert interview_turn_parse("What matters most to you here?").message == "What matters most to you here?"
    fenced = interview_turn_parse(f"Here is your card:\n```json\n{CARD_JSON}\n```")
    assert fenced.card is not None and fenced.card.title == "Honest support"
    for bad in ('{"question": "hi"}', '{"values_card": {"title": "", "description": "d", "attention_policies": []}}'):
        with pytest.raises(InterviewerUnavailable):
            interview_turn_parse(bad)
