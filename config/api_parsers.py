"""The API's JSON parser: DRF's, plus a 400 for a body nested too deeply to parse.

Python's json module recurses once per nested array or object; `[[[[…` a hundred thousand deep
raises RecursionError, which DRF's parser (it catches ValueError) would let through as a 500.
"""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
