"""Rate limits for participants: per API token, and per browser participant on the judgment page.

Rates come from settings (`POLYPHONY_PARTICIPANT_RATE`, `POLYPHONY_PARTICIPANT_PAGE_RATE`, e.g.
"120/min" or "off"); the counters live in the default cache, which must be shared (Redis,
`CACHE_URL`) when several web processes serve one study, else each process counts on its own.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from annotation.models import Participant


class _SettingsRateThrottle(SimpleRateThrottle):
    def get_rate(self) -> str | None:
        # Read now, not at import (SimpleRateThrottle.THROTTLE_RATES), so tests and benchmarks may change it.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class ParticipantRateThrottle(_SettingsRateThrottle):
    """Requests per participant token on the participant API."""

    scope = "participant"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        participant = getattr(request, "auth", None)
        if not isinstance(participant, Participant):
            return None  # not a participant request: authentication refuses it anyway
        return self.cache_format % {"scope": self.scope, "ident": participant.pk}


class _ParticipantPageThrottle(_SettingsRateThrottle):
    scope = "participant_page"

    def __init__(self, participant_id: int) -> None:
        super().__init__()
        self.participant_id = participant_id

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.participant_id}


def participant_page_allowed(*, request: HttpRequest, participant_id: int) -> tuple[bool, int | None]:
    """Counts one answer posted from the browser; `(allowed, seconds to wait)`."""
    throttle = _ParticipantPageThrottle(participant_id)
    if throttle.allow_request(request, None):
        return True, None
    wait = throttle.wait()
    return False, None if wait is None else max(1, round(wait))
