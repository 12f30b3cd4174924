"""Forms for the researcher pages. They parse and check input; the services write."""

from __future__ import annotations

from typing import Any

from django import forms
from django.forms import BaseInlineFormSet, inlineformset_factory

from elicitation.models import Study, SurveyQuestion
from elicitation.services import (
    CHOICE_KINDS,
    RESERVED_SLUGS,
    STUDY_CONFIG_FIELDS,
    SurveyQuestionSpec,
    strength_labels_parse,
)

# Settings most studies leave alone: an empty field keeps the current value rather than failing.
OPTIONAL_WITH_DEFAULT = ("mixed_epsilon", "consistency_repeats")


class StudyForm(forms.ModelForm):
    """Create or edit a study's configuration (status changes have their own buttons)."""

    strength_labels = forms.CharField(
        required=False,
        label="Strength scale",
        help_text="Comma-separated labels, weakest first, e.g. “slightly, clearly, much”. "
        "Leave empty to ask no strength question.",
    )
    redirect_url = forms.URLField(
        required=False,
        max_length=200,
        assume_scheme="https",
        label="Redirect URL",
        help_text="Optional, e.g. https://app.prolific.com/submissions/complete?cc=CODE",
    )

    class Meta:
        model = Study
        fields = list(STUDY_CONFIG_FIELDS)
        labels = {
            "overlap_target": "Target judgments per pair",
            "allow_ties": "Allow ties",
            "rationale_mode": "Ask for a rationale",
            "mixed_epsilon": "Coverage share (mixed policy)",
            "consistency_repeats": "Consistency repeats",
        }
        help_texts = {
            "slug": "Letters, digits and hyphens; participants’ link is /s/<slug>/.",
            "judgments_per_participant": "How many pairs each participant judges.",
            "completion_code": "Shown after the last judgment (Prolific style). Leave empty to generate one.",
        }
        widgets = {
            "description": forms.Textarea(attrs={"rows": 3}),
            "consent_text": forms.Textarea(attrs={"rows": 6}),
            "instructions": forms.Textarea(attrs={"rows": 6}),
        }

    def __init__(self, *args: Any, slug_locked: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.initial["strength_labels"] = ", ".join(self.instance.strength_labels)
        for name in OPTIONAL_WITH_DEFAULT:
            self.fields[name].required = False
        if slug_locked:
            # Shared participant links contain the slug; the service refuses the change too.
            self.fields["slug"].disabled = True
            self.fields["slug"].help_text = "Fixed: participant links already use it."

    def clean_slug(self) -> str:
        slug: str = self.cleaned_data["slug"]
        if slug in RESERVED_SLUGS:
            raise forms.ValidationError(f"“{slug}” is reserved; choose another slug.")
        return slug

    def clean_strength_labels(self) -> list[str]:
        return strength_labels_parse(text=self.cleaned_data["strength_labels"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for name in OPTIONAL_WITH_DEFAULT:
            if cleaned.get(name) is None and name not in self.errors:
                # Left empty: keep what the study has (its model default when new).
                cleaned[name] = getattr(self.instance, name)
        return cleaned


class SurveyQuestionForm(forms.ModelForm):
    choices = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="For (multiple) choice questions: one option per line.",
    )

    class Meta:
        model = SurveyQuestion
        fields = ["key", "text", "kind", "choices", "required", "min_value", "max_value", "position"]
        labels = {"min_value": "Minimum", "max_value": "Maximum", "text": "Question"}
        help_texts = {"key": "Column name in exports, e.g. age_group."}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["position"].required = False
        if self.instance.pk and not self.is_bound:
            self.initial["choices"] = "\n".join(self.instance.choices)

    def has_changed(self) -> bool:
        if self.instance.pk:
            return super().has_changed()
        # The empty "new question" block counts as filled in only once something is typed into it:
        # its pre-set position and ticked "required" box alone do not make a question.
        return any(name in self.changed_data for name in ("key", "text", "choices", "min_value", "max_value"))

    def clean_choices(self) -> list[str]:
        return [line.strip() for line in self.cleaned_data["choices"].splitlines() if line.strip()]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        kind = cleaned.get("kind")
        choices = cleaned.get("choices") or []
        if kind in CHOICE_KINDS:
            if len(set(choices)) < 2:
                self.add_error("choices", "A choice question needs at least two different choices.")
            elif len(set(choices)) != len(choices):
                self.add_error("choices", "Choices must all differ.")
        elif kind:
            # A kind switched away from "choice" leaves its options in the box; they mean nothing now.
            cleaned["choices"] = []
        if kind and kind != SurveyQuestion.Kind.NUMBER:
            cleaned["min_value"] = cleaned["max_value"] = None
        low, high = cleaned.get("min_value"), cleaned.get("max_value")
        if low is not None and high is not None and low > high:
            self.add_error("max_value", "The maximum must not be below the minimum.")
        return cleaned


class BaseSurveyFormSet(BaseInlineFormSet):
    def question_specs(self) -> list[SurveyQuestionSpec]:
        """The questions to keep, in the order of their positions (ties: the order on the page)."""
        specs = []
        for index, form in enumerate(self.forms, start=1):
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE"):
                continue
            specs.append(
                SurveyQuestionSpec(
                    id=form.instance.pk,
                    key=data["key"],
                    text=data["text"],
                    kind=data["kind"],
                    choices=data["choices"],
                    required=data["required"],
                    min_value=data["min_value"],
                    max_value=data["max_value"],
                    position=data["position"] if data["position"] is not None else index,
                )
            )
        return sorted(specs, key=lambda spec: spec.position or 0)


SurveyFormSet = inlineformset_factory(
    Study, SurveyQuestion, form=SurveyQuestionForm, formset=BaseSurveyFormSet, extra=1, can_delete=True,
    max_num=50, validate_max=True,
)


class AttentionCheckForm(forms.Form):
    prompt_text = forms.CharField(label="Prompt", widget=forms.Textarea(attrs={"rows": 3}))
    correct_text = forms.CharField(
        label="Correct response", widget=forms.Textarea(attrs={"rows": 3}),
        help_text="The response a careful annotator prefers.",
    )
    wrong_text = forms.CharField(
        label="Wrong response", widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Clearly worse: off-topic, broken or wrong.",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        # Browsers send textarea line breaks as CRLF; imported texts use LF. Texts are matched by
        # content hash, so normalise or a pasted pool response would not be recognised.
        for name in ("prompt_text", "correct_text", "wrong_text"):
            if name in cleaned:
                cleaned[name] = cleaned[name].replace("\r\n", "\n")
        return cleaned


class StudyStatusForm(forms.Form):
    status = forms.ChoiceField(choices=Study.Status.choices)
