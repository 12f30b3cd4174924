"""Parsing for the annotator pages. Domain rules (ties, strength range, survey constraints) live in
annotation.services; these forms turn request data into typed values and render the inputs."""

from __future__ import annotations

from dataclasses import dataclass

from django import forms

from annotation.models import Participant
from elicitation.models import SurveyQuestion

# Prolific substitutes {{%PROLIFIC_PID%}} in the study URL; an unfilled placeholder would make every
# tester the same participant.
_PLACEHOLDER_MARKERS = ("{{", "}}", "%PROLIFIC_PID%", "%STUDY_ID%", "%SESSION_ID%")


@dataclass(frozen=True)
class EntryIdentity:
    external_id: str | None  # None: anonymous, an id is made at consent
    source: str
    platform_study_id: str
    platform_session_id: str

    def as_session(self) -> dict[str, str | None]:
        return {
            "external_id": self.external_id,
            "source": self.source,
            "platform_study_id": self.platform_study_id,
            "platform_session_id": self.platform_session_id,
        }

    @classmethod
    def from_session(cls, data: object) -> EntryIdentity:
        if not isinstance(data, dict):
            return cls(None, Participant.Source.ANONYMOUS, "", "")
        external_id = data.get("external_id")
        return cls(
            external_id=external_id if isinstance(external_id, str) and external_id else None,
            source=str(data.get("source") or Participant.Source.ANONYMOUS),
            platform_study_id=str(data.get("platform_study_id") or ""),
            platform_session_id=str(data.get("platform_session_id") or ""),
        )


class EntryParamsForm(forms.Form):
    """The recruitment parameters of the one study link: /s/<slug>/?PROLIFIC_PID=…&STUDY_ID=…&SESSION_ID=…"""

    PROLIFIC_PID = forms.CharField(max_length=200, required=False)
    STUDY_ID = forms.CharField(max_length=200, required=False)
    SESSION_ID = forms.CharField(max_length=200, required=False)
    pid = forms.CharField(max_length=200, required=False)

    def clean(self) -> dict[str, object]:
        cleaned = super().clean() or {}
        for name, value in list(cleaned.items()):
            if isinstance(value, str) and any(marker in value for marker in _PLACEHOLDER_MARKERS):
                self.add_error(name, "This looks like an unfilled placeholder, not a participant id.")
        return cleaned

    def identity(self) -> EntryIdentity:
        data = self.cleaned_data
        if data.get("PROLIFIC_PID"):
            return EntryIdentity(
                data["PROLIFIC_PID"], Participant.Source.PROLIFIC, data.get("STUDY_ID", ""), data.get("SESSION_ID", "")
            )
        if data.get("pid"):
            return EntryIdentity(data["pid"], Participant.Source.PID, "", "")
        return EntryIdentity(None, Participant.Source.ANONYMOUS, "", "")


class ConsentForm(forms.Form):
    decision = forms.ChoiceField(choices=[("agree", "I agree"), ("decline", "I do not agree")])


class JudgmentForm(forms.Form):
    served_id = forms.UUIDField(error_messages={"invalid": "This comparison id is malformed; reload the page."})
    choice = forms.CharField(max_length=3, required=False)
    strength = forms.IntegerField(required=False, error_messages={"invalid": "Pick a strength from the scale."})
    # Length is checked by the service so the message can say how long the text is.
    rationale = forms.CharField(required=False, strip=False)


class SurveyForm(forms.Form):
    """One field per SurveyQuestion; the service re-checks the same constraints for non-form callers."""

    def __init__(self, *args: object, questions: list[SurveyQuestion], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.questions = questions
        for question in questions:
            self.fields[question.key] = self._field_for(question)

    @staticmethod
    def _field_for(question: SurveyQuestion) -> forms.Field:
        common: dict[str, object] = {
            "label": question.text,
            "required": question.required,
            "error_messages": {"required": "This question is required."},
        }
        choices = [(c, c) for c in question.choices]
        if question.kind == SurveyQuestion.Kind.CHOICE:
            return forms.ChoiceField(choices=choices, widget=forms.RadioSelect, **common)
        if question.kind == SurveyQuestion.Kind.MULTI_CHOICE:
            return forms.MultipleChoiceField(choices=choices, widget=forms.CheckboxSelectMultiple, **common)
        if question.kind == SurveyQuestion.Kind.NUMBER:
            low, high = question.min_value, question.max_value
            common["error_messages"] = {
                "required": "This question is required.",
                "invalid": "Enter a number.",
                "min_value": f"Enter a number of at least {low:g}." if low is not None else "",
                "max_value": f"Enter a number of at most {high:g}." if high is not None else "",
            }
            attrs = {"inputmode": "decimal", "step": "any"}
            return forms.FloatField(min_value=low, max_value=high, widget=forms.NumberInput(attrs=attrs), **common)
        return forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000, **common)

    def answers(self) -> dict[str, object]:
        """Cleaned values keyed by question key, leaving out unanswered optional questions."""
        return {key: value for key, value in self.cleaned_data.items() if value not in (None, "", [])}
