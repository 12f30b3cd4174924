"""Participant API tokens: issue one when a researcher's platform registers a participant, look it up.

Only the SHA-256 of a token is stored (Participant.api_token_hash), so a leaked database gives no
working tokens; the token itself is shown once, in the registration response.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Mapping

from django.core.exceptions import ValidationError

from annotation.models import Participant
from annotation.services import participant_consent
from elicitation.models import Study

ATTRIBUTES_MAX = 50
ATTRIBUTE_KEY_MAX_CHARS = 100
ATTRIBUTE_VALUE_MAX_CHARS = 500


def token_hash(*, token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def participant_api_register(
    *, study: Study, external_id: str, attributes: Mapping[str, object]
) -> tuple[Participant, str]:
    """Create (or resume) a participant whose consent the researcher's platform collected; a new token.

    Registering an existing external id again replaces its token (the old one stops working) and
    merges the attributes. Raises ValidationError for bad attributes (nothing is written) and
    annotation.services.StudyNotOpen for a study that is not open.
    """
    cleaned = _attributes_clean(attributes=attributes)
    participant = participant_consent(study=study, external_id=external_id, source=Participant.Source.API)
    token = secrets.token_urlsafe(32)
    participant.attributes = {**participant.attributes, **cleaned}
    participant.api_token_hash = token_hash(token=token)
    participant.save(update_fields=["attributes", "api_token_hash"])
    return participant, token


def participant_for_token(*, token: str) -> Participant | None:
    """The participant holding this token, with its study (one query), or None."""
    if not token:
        return None
    return Participant.objects.select_related("study").filter(api_token_hash=token_hash(token=token)).first()


def _attributes_clean(*, attributes: Mapping[str, object]) -> dict[str, str | int | float]:
    """Attributes as the comparison format allows them: string keys, string or finite number values."""
    if len(attributes) > ATTRIBUTES_MAX:
        raise ValidationError({"attributes": f"At most {ATTRIBUTES_MAX} attributes."})
    cleaned: dict[str, str | int | float] = {}
    for key, value in attributes.items():
        if not isinstance(key, str) or not key.strip() or len(key) > ATTRIBUTE_KEY_MAX_CHARS:
            raise ValidationError({"attributes": f"Attribute names must be 1 to {ATTRIBUTE_KEY_MAX_CHARS} characters."})
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValidationError({"attributes": f"Attribute {key!r} must be a string or a number."})
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError({"attributes": f"Attribute {key!r} must be a finite number."})
        if isinstance(value, str) and len(value) > ATTRIBUTE_VALUE_MAX_CHARS:
            raise ValidationError({"attributes": f"Attribute {key!r} is longer than {ATTRIBUTE_VALUE_MAX_CHARS} characters."})
        if "\x00" in key or (isinstance(value, str) and "\x00" in value):  # PostgreSQL's JSON cannot hold it
            raise ValidationError({"attributes": f"Attribute {key!r} holds a NUL character."})
        cleaned[key.strip()] = value
    return cleaned
