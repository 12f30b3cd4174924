"""Parsing for the values pages. Limits and rules (card sizes, answers) live in
annotation.moral_services; these forms turn request data into typed values."""

from __future__ import annotations

from django import forms

from annotation.interviewers import GUIDED_QUESTIONS
from annotation.models import LegitimacyAnswer, WiserVote

# Generous transport limits: the services give the precise messages ("it has N characters").
_TRANSPORT_MAX = 20_000


class GuidedInterviewForm(forms.Form):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        for i, question in enumerate(GUIDED_QUESTIONS):
            self.fields[f"answer_{i}"] = forms.CharField(
                label=question, required=False, max_length=_TRANSPORT_MAX, strip=False,
                widget=forms.Textarea(attrs={"rows": 4 if i == 0 else 3}),
            )

    def answers(self) -> list[str]:
        return [self.cleaned_data.get(f"answer_{i}", "") for i in range(len(GUIDED_QUESTIONS))]


class ChatMessageForm(forms.Form):
    message = forms.CharField(required=False, max_length=_TRANSPORT_MAX, strip=False)


class ValuesCardForm(forms.Form):
    title = forms.CharField(required=False, max_length=_TRANSPORT_MAX)
    description = forms.CharField(required=False, max_length=_TRANSPORT_MAX)
    attention_policies = forms.CharField(required=False, max_length=_TRANSPORT_MAX * 5)

    def policy_lines(self) -> list[str]:
        return [line for line in self.cleaned_data.get("attention_policies", "").splitlines() if line.strip()]


class DedupForm(forms.Form):
    same_as = forms.CharField(required=True, error_messages={"required": "Choose one of the options."})

    def same_as_id(self) -> int | None:
        """None: "none of these captures my value"; raises ValueError for anything but an id or "none"."""
        value = self.cleaned_data["same_as"]
        return None if value == "none" else int(value)


class WiserVoteForm(forms.Form):
    context_id = forms.IntegerField()
    from_card = forms.IntegerField()
    to_card = forms.IntegerField()
    submission_id = forms.UUIDField(error_messages={"invalid": "This answer's id is malformed; reload the page."})
    answer = forms.CharField(required=False, max_length=20)
    reason = forms.CharField(required=False, max_length=_TRANSPORT_MAX)
    better_story = forms.CharField(required=False, max_length=_TRANSPORT_MAX)

    answer_choices = WiserVote.Answer.choices


class LegitimacyForm(forms.Form):
    values_represented = forms.CharField(required=False, max_length=20)
    process_fair = forms.CharField(required=False, max_length=20)
    comment = forms.CharField(required=False, max_length=_TRANSPORT_MAX)

    choices = LegitimacyAnswer.Choice.choices
