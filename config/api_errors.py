"""Every API error is a JSON body with a `detail` (and field errors where there are some).

Three pieces: the DRF exception handler (errors raised in API views), `ApiErrorsMiddleware` (what
happens under /api/ before or around DRF: an oversized body, a path no route matches), and
`FileOrJsonErrorRenderer` (views that answer a file still answer their errors in JSON).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

API_PREFIX = "/api/"
# Multipart framing around an import file of up to DATA_UPLOAD_MAX_MEMORY_SIZE (= the import limit)
# must not push a legitimate upload over the body limit; the import itself checks the file's size.
BODY_HEADROOM_BYTES = 1024 * 1024


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail={"detail": exc.messages})
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, list):
        response.data = {"detail": response.data}
    elif response is not None and isinstance(response.data, dict) and "detail" not in response.data:
        response.data = {"detail": "Invalid input.", "errors": response.data}
    return response


class FileOrJsonErrorRenderer(BaseRenderer):
    """For a view that answers a file: a client asking for the file's type (`Accept` or `?format=`)
    gets the file rather than a 406, while the only data this renderer ever renders, error bodies,
    go out as JSON labelled as JSON (not as a JSON text that claims to be a zip)."""

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"
        return JSONRenderer().render(data)


class ApiErrorsMiddleware:
    """Under /api/: refuse a body over the upload limit before anything reads it (413), and answer
    in JSON what Django itself answers in HTML (a path no route matches, a body found too big
    while parsing). Pages outside /api/ keep Django's own error pages."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and _content_length(request) > limit + BODY_HEADROOM_BYTES:
            return _too_large()
        response = self.get_response(request)
        if 400 <= response.status_code < 500 and not _is_json(response):
            return JsonResponse({"detail": response.reason_phrase or "Bad request."}, status=response.status_code)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        # Django found the body (less any uploaded files) over the limit while parsing it.
        if request.path_info.startswith(API_PREFIX) and isinstance(exception, RequestDataTooBig):
            return _too_large()
        return None


def _content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0  # Django reads a malformed length as none, too


def _too_large() -> JsonResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    detail = "The request body is too large." + (f" The limit is {limit} bytes." if limit is not None else "")
    return JsonResponse({"detail": detail}, status=413)


def _is_json(response: HttpResponse) -> bool:
    return "json" in response.get("Content-Type", "")
