"""The two interviewers that turn what a participant says into a values card, behind one interface.

* `GuidedInterviewer` (the default, no external service): a short fixed sequence of questions; the
  participant then writes the card themselves, with help text and a description drafted from their
  first answer.
* `LLMInterviewer`: any OpenAI-compatible chat endpoint (a local vLLM or Ollama server, or a hosted
  API) through the `openai` client with `base_url`. Participant text is only ever sent in the `user`
  role; the system prompt holds the researcher's question and context and nothing a participant
  wrote. Any failure (connection, timeout, HTTP error, a reply that is not a chat completion, or a
  card that is not a card) raises `InterviewerUnavailable`, and the caller continues in the guided
  interview.

Values cards follow Klingefjord, Lowe & Edelman (2024): a title, a one-sentence description, and
attention policies, "the things a person with this value pays attention to when choosing well",
each starting with a plural noun in capitals ("MOMENTS when the person feels unheard").
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings

logger = logging.getLogger(__name__)

TITLE_MAX_CHARS = 120
DESCRIPTION_MAX_CHARS = 400
POLICY_MAX_CHARS = 200
MAX_POLICIES = 10
MESSAGE_MAX_CHARS = 4000  # one participant message, or one interviewer question
STORY_MAX_CHARS = 1500
# After this many participant messages the LLM is told to write the card now.
LLM_TURNS_BEFORE_CARD = 4
LLM_MAX_TOKENS = 800


@dataclass(frozen=True)
class CardDraft:
    title: str
    description: str
    attention_policies: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class InterviewTurn:
    """What the interviewer does next: ask `message`, or hand over a drafted `card`."""

    message: str = ""
    card: CardDraft | None = None


class InterviewerUnavailable(Exception):
    """The interviewer back end failed, timed out or replied with something unusable."""


class Interviewer(Protocol):
    backend: str

    def opening(self, *, question: str, context: str) -> str:
        """The first thing the participant is asked (no back-end call: it is the researcher's text)."""
        ...

    def reply(self, *, question: str, context: str, transcript: Sequence[Mapping[str, str]]) -> InterviewTurn:
        """Given the conversation so far (`{"role": "assistant"|"user", "content"}` oldest first)."""
        ...


# --- Guided -------------------------------------------------------------------------------------

GUIDED_QUESTIONS: tuple[str, ...] = (
    "Imagine you are advising someone in this situation. What would an ideal response pay attention to?",
    "Think of a time you, or someone you admire, handled a situation like this well. "
    "What did they notice or care about?",
    "Why does this way of responding matter to you, beyond following a rule?",
)


class GuidedInterviewer:
    """A fixed sequence of questions; afterwards the participant writes the card (drafted from answer 1)."""

    backend = "guided"

    def opening(self, *, question: str, context: str) -> str:
        return GUIDED_QUESTIONS[0]

    def questions(self) -> tuple[str, ...]:
        return GUIDED_QUESTIONS

    def reply(self, *, question: str, context: str, transcript: Sequence[Mapping[str, str]]) -> InterviewTurn:
        answers = [turn["content"] for turn in transcript if turn.get("role") == "user"]
        if len(answers) < len(GUIDED_QUESTIONS):
            return InterviewTurn(message=GUIDED_QUESTIONS[len(answers)])
        return InterviewTurn(card=self.draft(answers=answers))

    def draft(self, *, answers: Sequence[str]) -> CardDraft:
        """A starting point only: the description is the first sentence the participant wrote."""
        first = next((a.strip() for a in answers if a.strip()), "")
        sentence = re.split(r"(?<=[.!?])\s+", first, maxsplit=1)[0] if first else ""
        return CardDraft(title="", description=sentence[:DESCRIPTION_MAX_CHARS], attention_policies=[])


# --- LLM ----------------------------------------------------------------------------------------

_SYSTEM_PROMPT = """You are a careful, warm interviewer helping a research participant articulate a value.
The researcher's question is: {question}
The context to focus on is: {context}

Ask the participant one short question at a time about what an ideal response in this context should \
pay attention to, and why it matters to them. Do not argue, judge or suggest values of your own. When you \
understand what they care about (at most {turns} questions), reply with ONLY a JSON object:
{{"values_card": {{"title": "a short name for the value", "description": "one sentence", \
"attention_policies": ["PLURAL NOUN IN CAPITALS then what they attend to", "..."]}}}}
Each attention policy starts with a plural noun in capitals, e.g. "MOMENTS when the person feels unheard". \
Write 3 to 6 attention policies. Until then, reply with just your next question as plain text."""

_WRITE_CARD_NOW = "Now reply with ONLY the JSON values_card object described above."

_STORY_SYSTEM_PROMPT = """You write short, neutral stories for a research study on values.
The researcher's question is: {question}
The context is: {context}
The user gives you two values cards, A and B. Write a first-person story of 3 to 5 sentences about \
someone who used to act on value A in this context and came to see value B as wiser, because B \
addresses what A was really about. Plain text only, no headings."""


class LLMInterviewer:
    """The interview through an OpenAI-compatible chat endpoint (see the module docstring)."""

    backend = "llm"

    def __init__(self, *, base_url: str, model: str, api_key: str, timeout: float) -> None:
        # Imported here: only studies that use the LLM back end pay for loading the client.
        import openai

        self.model = model
        # No retries: a participant waits at most `timeout` before the guided interview takes over.
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=0
        )

    def opening(self, *, question: str, context: str) -> str:
        return GUIDED_QUESTIONS[0]

    def reply(self, *, question: str, context: str, transcript: Sequence[Mapping[str, str]]) -> InterviewTurn:
        system = _SYSTEM_PROMPT.format(question=question, context=context, turns=LLM_TURNS_BEFORE_CARD)
        messages: list[dict[str, str]] = [{"role": "system", "content": system}]
        # Only two roles come from the transcript: participant text stays in "user", always.
        messages += [
            {"role": "user" if turn.get("role") == "user" else "assistant", "content": str(turn.get("content", ""))}
            for turn in transcript
        ]
        user_turns = sum(1 for turn in transcript if turn.get("role") == "user")
        if user_turns >= LLM_TURNS_BEFORE_CARD:
            messages.append({"role": "system", "content": _WRITE_CARD_NOW})
        return interview_turn_parse(self._complete(messages))

    def story_draft(self, *, question: str, context: str, from_card: CardDraft, to_card: CardDraft) -> str:
        """A short upgrade story from value A to value B (both cards go in the user message)."""
        cards = json.dumps({"A": _card_json(from_card), "B": _card_json(to_card)}, ensure_ascii=False)
        text = self._complete([
            {"role": "system", "content": _STORY_SYSTEM_PROMPT.format(question=question, context=context)},
            {"role": "user", "content": cards},
        ]).strip()
        if not text or text.startswith("{") or len(text) > STORY_MAX_CHARS:
            raise InterviewerUnavailable("The story reply was empty, JSON, or too long.")
        return text

    def _complete(self, messages: list[dict[str, str]]) -> str:
        import openai

        try:
            completion: Any = self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=LLM_MAX_TOKENS, temperature=0.4,  # type: ignore[arg-type]
            )
            content = completion.choices[0].message.content
        except openai.APITimeoutError as exc:
            raise InterviewerUnavailable("The interviewer did not answer in time.") from exc
        except openai.OpenAIError as exc:
            raise InterviewerUnavailable(f"The interviewer endpoint failed: {type(exc).__name__}.") from exc
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            # A 200 whose body is not a chat completion (the client does not validate it).
            raise InterviewerUnavailable("The interviewer's reply was not a chat completion.") from exc
        if not isinstance(content, str) or not content.strip():
            raise InterviewerUnavailable("The interviewer's reply was empty.")
        return content


def _card_json(card: CardDraft) -> dict[str, object]:
    return {"title": card.title, "description": card.description, "attention_policies": card.attention_policies}


_JSON_FENCE = re.compile(r"```(?:json)?\s*(\{.*\})\s*```", re.DOTALL)


def interview_turn_parse(content: str) -> InterviewTurn:
    """An LLM reply as the next question (plain text) or a card (JSON); anything else is malformed."""
    text = content.strip()
    fenced = _JSON_FENCE.search(text)
    candidate = fenced.group(1) if fenced else text
    if candidate.startswith("{") or "values_card" in candidate:
        try:
            data = json.loads(candidate)
        except ValueError as exc:
            raise InterviewerUnavailable("The interviewer's card was not valid JSON.") from exc
        return InterviewTurn(card=_card_from_json(data))
    if len(text) > MESSAGE_MAX_CHARS:
        raise InterviewerUnavailable("The interviewer's question was too long.")
    return InterviewTurn(message=text)


def _card_from_json(data: object) -> CardDraft:
    card = data.get("values_card") if isinstance(data, dict) else None
    if not isinstance(card, dict):
        raise InterviewerUnavailable("The interviewer's reply had no values_card object.")
    title, description, policies = card.get("title"), card.get("description"), card.get("attention_policies")
    if not isinstance(title, str) or not isinstance(description, str) or not isinstance(policies, list):
        raise InterviewerUnavailable("The interviewer's card lacks a title, description or attention policies.")
    if not all(isinstance(p, str) for p in policies):
        raise InterviewerUnavailable("The interviewer's attention policies are not all text.")
    # The participant edits the draft next; here only what cannot be a card is refused.
    draft = CardDraft(
        title=title.strip()[:TITLE_MAX_CHARS],
        description=description.strip()[:DESCRIPTION_MAX_CHARS],
        attention_policies=[p.strip()[:POLICY_MAX_CHARS] for p in policies if p.strip()][:MAX_POLICIES],
    )
    if not draft.title or not draft.attention_policies:
        raise InterviewerUnavailable("The interviewer's card is empty.")
    return draft


def llm_is_configured() -> bool:
    return bool(settings.POLYPHONY_LLM_BASE_URL)


def llm_interviewer() -> LLMInterviewer:
    return LLMInterviewer(
        base_url=settings.POLYPHONY_LLM_BASE_URL,
        model=settings.POLYPHONY_LLM_MODEL,
        api_key=settings.POLYPHONY_LLM_API_KEY,
        timeout=settings.POLYPHONY_LLM_TIMEOUT,
    )


def interviewer_for_backend(backend: str) -> Interviewer:
    """The interviewer a card was assigned; the LLM only while it is configured."""
    if backend == LLMInterviewer.backend and llm_is_configured():
        return llm_interviewer()
    return GuidedInterviewer()
