"""Importing prompts and candidate responses (JSONL or CSV), plus the file reading every importer shares.

An import is all or nothing: every line is validated before anything is written, errors are
reported as `line N: what is wrong`, and the writes happen in one transaction. Re-importing the
same content reuses the existing rows (matched by content hash) instead of duplicating them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

from elicitation.models import Pair, Prompt, Response, Study, content_hash
from elicitation.pool import pool_extend_for_prompts

# Past this many errors the rest of the file is still checked, but only counted, so that a
# wholly wrong file (say, the wrong column separator) gives a short message, not 100k lines.
MAX_REPORTED_ERRORS = 20

# Rows looked up per `IN (...)` query: well under SQLite's bound-parameter limit.
LOOKUP_CHUNK = 500


class ImportRejected(Exception):
    """The file was rejected as a whole; nothing was written. `errors` are `line N: ...` strings."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class ErrorCollector:
    """Collects `line N: ...` errors, keeping the first MAX_REPORTED_ERRORS and counting the rest."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.hidden = 0

    def add(self, line: int | None, message: str) -> None:
        if len(self.errors) >= MAX_REPORTED_ERRORS:
            self.hidden += 1
            return
        self.errors.append(f"line {line}: {message}" if line is not None else message)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            extra = [f"... and {self.hidden} more errors not shown"] if self.hidden else []
            raise ImportRejected(self.errors + extra)


def import_bytes_read(*, stream: IO[bytes]) -> bytes:
    """Read an uploaded or opened file, refusing more than POLYPHONY_IMPORT_MAX_BYTES.

    Reads at most one byte past the limit, so an oversized upload is refused without being
    loaded whole.
    """
    limit = settings.POLYPHONY_IMPORT_MAX_BYTES
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ImportRejected([f"The file is larger than the import limit of {_human_bytes(limit)}."])
    return data


def import_text_decode(*, data: bytes) -> str:
    """Decode UTF-8 (a leading byte-order mark is dropped); anything else is a clear error."""
    if len(data) > settings.POLYPHONY_IMPORT_MAX_BYTES:
        raise ImportRejected(
            [f"The file is larger than the import limit of {_human_bytes(settings.POLYPHONY_IMPORT_MAX_BYTES)}."]
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportRejected(
            [f"line {line}: the file is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
             "save it as UTF-8 and try again."]
        ) from None
    if "\x00" in text:  # PostgreSQL text cannot hold it; a UTF-16 file read as UTF-8 is full of them
        offset = text.index("\x00")
        raise ImportRejected(
            [f"line {text[:offset].count(chr(10)) + 1}: the file contains a NUL character (offset {offset}); "
             "is it UTF-16? Save it as UTF-8 text and try again."]
        )
    if not text.strip():
        raise ImportRejected(["The file is empty."])
    return text


def jsonl_records(*, text: str, errors: ErrorCollector) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; malformed lines go to `errors`."""
    # Split on "\n" only: str.splitlines() would also break at U+2028, U+0085 and friends,
    # which JSON writers leave unescaped inside strings.
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors.add(number, f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:  # json recurses once per nested array or object
            errors.add(number, "not valid JSON (nested too deeply)")
            continue
        if not isinstance(value, dict):
            errors.add(number, f"expected a JSON object, got {json_type_name(value)}")
            continue
        if _holds_nul(value):
            errors.add(number, NUL_ERROR)
            continue
        yield number, value


def json_lines_records(*, lines: list[Any], errors: ErrorCollector) -> Iterator[tuple[int, dict[str, Any]]]:
    """The API's `{"lines": [...]}` body: the same objects as a JSONL file, numbered from 1."""
    if not lines:
        errors.add(None, "The import is empty.")
    for number, value in enumerate(lines, start=1):
        if not isinstance(value, dict):
            errors.add(number, f"expected a JSON object, got {json_type_name(value)}")
            continue
        if _holds_nul(value):
            errors.add(number, NUL_ERROR)
            continue
        yield number, value


NUL_ERROR = "a text holds a NUL character (\\u0000), which cannot be stored"


def _holds_nul(value: Any) -> bool:
    """Whether a parsed JSON value has U+0000 in any string, key or nested value (JSON may escape
    it as \\u0000, so the raw line need not show it)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def unknown_fields_check(
    *, record: dict[str, Any], allowed: Iterable[str], line: int, errors: ErrorCollector
) -> bool:
    """Reject unexpected keys: a misspelt field name would otherwise be silently dropped."""
    allowed = list(allowed)
    unknown = [key for key in record if key not in allowed]
    if unknown:
        errors.add(line, f"unknown field {unknown[0]!r} (expected {', '.join(allowed)})")
        return False
    return True


def text_field_get(
    *, record: dict[str, Any], name: str, line: int, errors: ErrorCollector, required: bool = True
) -> str | None:
    """A non-blank string field; None (with an error when required) if missing or wrong."""
    value = record.get(name)
    if value is None:
        if required:
            errors.add(line, f"missing field {name!r}")
        return None
    if not isinstance(value, str):
        errors.add(line, f"{name!r} must be a string, got {json_type_name(value)}")
        return None
    if not value.strip():
        if required:
            errors.add(line, f"{name!r} is empty")
        return None
    return value


# --- Prompts and responses -------------------------------------------------------------------

RESPONSE_JSONL_FIELDS = ("prompt", "responses", "prompt_id", "sources", "attention_check")
RESPONSE_CSV_REQUIRED = ("prompt", "response")
RESPONSE_CSV_OPTIONAL = ("prompt_id", "source")


@dataclass
class _PromptRows:
    """Everything a file says about one prompt, gathered before any write."""

    text: str
    external_id: str = ""
    # Response text -> source, in first-seen order (dicts keep insertion order).
    responses: dict[str, str] = field(default_factory=dict)
    in_pool: bool = False  # at least one ordinary (non attention-check) line names this prompt


@dataclass(frozen=True)
class _AttentionCheck:
    prompt_text: str
    good: str
    bad: str


@dataclass(frozen=True)
class ResponseImportResult:
    prompts_created: int
    prompts_existing: int
    responses_created: int
    responses_existing: int
    attention_checks_created: int
    attention_checks_existing: int
    pairs_created: int

    def summary(self) -> str:
        return (
            f"{self.prompts_created} prompts created ({self.prompts_existing} already present), "
            f"{self.responses_created} responses created ({self.responses_existing} already present), "
            f"{self.attention_checks_created} attention checks created "
            f"({self.attention_checks_existing} already present), {self.pairs_created} pool pairs added."
        )


def import_format_guess(*, filename: str, data: bytes) -> str:
    """'jsonl' or 'csv', from the file name, else from the first character."""
    lowered = filename.lower()
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lowered.endswith((".csv", ".tsv")):
        return "csv"
    return "jsonl" if data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{" else "csv"


def responses_import(*, study: Study, data: bytes, file_format: str) -> ResponseImportResult:
    """Import a JSONL or CSV file of prompts and responses into `study`, all or nothing."""
    if file_format not in ("jsonl", "csv"):
        raise ImportRejected([f"Unknown file format {file_format!r}; use jsonl or csv."])
    text = import_text_decode(data=data)
    errors = ErrorCollector()
    if file_format == "jsonl":
        prompts, checks = _responses_from_records(records=jsonl_records(text=text, errors=errors), errors=errors)
    else:
        prompts, checks = _responses_from_csv(text=text, errors=errors)
    errors.raise_if_any()
    return _responses_write(study=study, prompts=prompts, checks=checks)


def responses_import_records(*, study: Study, records: list[Any]) -> ResponseImportResult:
    """Import already-parsed JSONL objects (the API's JSON body), all or nothing."""
    errors = ErrorCollector()
    prompts, checks = _responses_from_records(records=json_lines_records(lines=records, errors=errors), errors=errors)
    errors.raise_if_any()
    return _responses_write(study=study, prompts=prompts, checks=checks)


def _responses_from_records(
    *, records: Iterable[tuple[int, dict[str, Any]]], errors: ErrorCollector
) -> tuple[dict[str, _PromptRows], list[tuple[int, _AttentionCheck]]]:
    prompts: dict[str, _PromptRows] = {}
    checks: list[tuple[int, _AttentionCheck]] = []
    for line, record in records:
        if not unknown_fields_check(record=record, allowed=RESPONSE_JSONL_FIELDS, line=line, errors=errors):
            continue
        prompt_text = text_field_get(record=record, name="prompt", line=line, errors=errors)
        responses = _response_list_get(record=record, line=line, errors=errors)
        prompt_id = _prompt_id_get(record=record, line=line, errors=errors)
        sources = _sources_get(record=record, count=len(responses or []), line=line, errors=errors)
        attention = record.get("attention_check", False)
        if not isinstance(attention, bool):
            errors.add(line, f"'attention_check' must be true or false, got {json_type_name(attention)}")
            continue
        if prompt_text is None or responses is None or prompt_id is None or sources is None:
            continue
        if attention:
            if len(responses) != 2 or responses[0] == responses[1]:
                errors.add(line, "an attention check needs exactly two different responses: [correct, wrong]")
                continue
            checks.append((line, _AttentionCheck(prompt_text=prompt_text, good=responses[0], bad=responses[1])))
        rows = prompts.setdefault(prompt_text, _PromptRows(text=prompt_text))
        rows.external_id = rows.external_id or prompt_id
        rows.in_pool = rows.in_pool or not attention
        for text, source in zip(responses, sources, strict=True):
            rows.responses.setdefault(text, source)
    return prompts, checks


def _responses_from_csv(
    *, text: str, errors: ErrorCollector
) -> tuple[dict[str, _PromptRows], list[tuple[int, _AttentionCheck]]]:
    prompts: dict[str, _PromptRows] = {}
    # strict: a stray or unclosed quote is an error, not silently merged into the next rows.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [name.strip() for name in next(reader)]
    except csv.Error as exc:
        errors.add(1, f"not valid CSV ({exc})")
        return prompts, []
    missing = [name for name in RESPONSE_CSV_REQUIRED if name not in header]
    unknown = [name for name in header if name not in RESPONSE_CSV_REQUIRED + RESPONSE_CSV_OPTIONAL]
    if missing or unknown or len(set(header)) != len(header):
        problem = (
            f"missing column {missing[0]!r}" if missing
            else f"unknown column {unknown[0]!r}" if unknown else "a column name is repeated"
        )
        errors.add(1, f"{problem}; the header must be prompt,response with optional prompt_id and source")
        return prompts, []
    index = {name: position for position, name in enumerate(header)}
    while True:
        line = reader.line_num + 1  # a quoted cell may span lines: report where the row starts
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.add(line, f"not valid CSV ({exc})")
            break  # the reader cannot resynchronise after a broken quote
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            errors.add(line, f"expected {len(header)} cells like the header, got {len(row)}")
            continue
        prompt_text, response = row[index["prompt"]], row[index["response"]]
        if not prompt_text.strip():
            errors.add(line, "'prompt' is empty")
            continue
        if not response.strip():
            errors.add(line, "'response' is empty")
            continue
        rows = prompts.setdefault(prompt_text, _PromptRows(text=prompt_text, in_pool=True))
        if "prompt_id" in index:
            rows.external_id = rows.external_id or row[index["prompt_id"]].strip()
        rows.responses.setdefault(response, row[index["source"]].strip() if "source" in index else "")
    if not prompts and not errors:
        errors.add(None, "The file has a header but no rows.")
    return prompts, []


def _response_list_get(*, record: dict[str, Any], line: int, errors: ErrorCollector) -> list[str] | None:
    value = record.get("responses")
    if value is None:
        errors.add(line, "missing field 'responses'")
        return None
    if not isinstance(value, list) or not value:
        errors.add(line, "'responses' must be a non-empty list of strings")
        return None
    for position, item in enumerate(value, start=1):
        if not isinstance(item, str) or not item.strip():
            errors.add(line, f"response {position} must be a non-empty string, got {json_type_name(item)}")
            return None
    return value


def _prompt_id_get(*, record: dict[str, Any], line: int, errors: ErrorCollector) -> str | None:
    value = record.get("prompt_id", "")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        errors.add(line, f"'prompt_id' must be a string, got {json_type_name(value)}")
        return None
    return str(value)


def _sources_get(*, record: dict[str, Any], count: int, line: int, errors: ErrorCollector) -> list[str] | None:
    value = record.get("sources")
    if value is None:
        return [""] * count
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        errors.add(line, "'sources' must be a list of strings")
        return None
    if count and len(value) != count:
        errors.add(line, f"'sources' has {len(value)} entries but 'responses' has {count}")
        return None
    return value


def _responses_write(
    *, study: Study, prompts: dict[str, _PromptRows], checks: list[tuple[int, _AttentionCheck]]
) -> ResponseImportResult:
    with transaction.atomic():
        prompt_ids, prompts_created = prompts_get_or_create(
            study=study, texts={text: rows.external_id for text, rows in prompts.items()}
        )
        wanted = {
            (prompt_ids[text], response): source
            for text, rows in prompts.items()
            for response, source in rows.responses.items()
        }
        response_ids, responses_created = responses_get_or_create(items=wanted)
        checks_created, checks_existing = _attention_checks_create(
            study=study, checks=[check for _, check in checks], prompt_ids=prompt_ids, response_ids=response_ids
        )
        pairs_created = pool_extend_for_prompts(
            study=study, prompt_ids=[prompt_ids[text] for text, rows in prompts.items() if rows.in_pool]
        )
    return ResponseImportResult(
        prompts_created=prompts_created,
        prompts_existing=len(prompts) - prompts_created,
        responses_created=responses_created,
        responses_existing=len(wanted) - responses_created,
        attention_checks_created=checks_created,
        attention_checks_existing=checks_existing,
        pairs_created=pairs_created,
    )


def prompts_get_or_create(*, study: Study, texts: dict[str, str]) -> tuple[dict[str, int], int]:
    """Map prompt text -> id, creating the missing prompts. `texts` maps text -> external id.

    Returns (ids, number created). Call inside the caller's transaction.
    """
    by_hash = {content_hash(text): text for text in texts}
    existing = _ids_by_hash(Prompt.objects.filter(study=study), "content_hash", list(by_hash))
    missing = [
        Prompt(study=study, text=text, content_hash=digest, external_id=texts[text][:200])
        for digest, text in by_hash.items() if digest not in existing
    ]
    # ignore_conflicts: a concurrent import of the same prompt must not fail this one.
    Prompt.objects.bulk_create(missing, batch_size=1000, ignore_conflicts=True)
    if missing:
        existing = _ids_by_hash(Prompt.objects.filter(study=study), "content_hash", list(by_hash))
    return {text: existing[digest] for digest, text in by_hash.items()}, len(missing)


def responses_get_or_create(*, items: dict[tuple[int, str], str]) -> tuple[dict[tuple[int, str], int], int]:
    """Map (prompt id, response text) -> response id, creating the missing responses.

    `items` maps (prompt id, text) -> source. Returns (ids, number created).
    """
    wanted = {(prompt_id, content_hash(text)): (prompt_id, text) for prompt_id, text in items}
    existing = _response_ids(list(wanted))
    missing = [
        Response(prompt_id=prompt_id, text=text, content_hash=digest, source=items[(prompt_id, text)][:200])
        for (prompt_id, digest), (_, text) in wanted.items() if (prompt_id, digest) not in existing
    ]
    Response.objects.bulk_create(missing, batch_size=1000, ignore_conflicts=True)
    if missing:
        existing = _response_ids(list(wanted))
    return {key: existing[digest_key] for digest_key, key in wanted.items()}, len(missing)


def _ids_by_hash(queryset: Any, column: str, hashes: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(hashes), LOOKUP_CHUNK):
        chunk = hashes[start:start + LOOKUP_CHUNK]
        found.update(queryset.filter(**{f"{column}__in": chunk}).values_list(column, "id"))
    return found


def _response_ids(keys: list[tuple[int, str]]) -> dict[tuple[int, str], int]:
    found: dict[tuple[int, str], int] = {}
    for start in range(0, len(keys), LOOKUP_CHUNK):
        chunk = keys[start:start + LOOKUP_CHUNK]
        rows = Response.objects.filter(
            prompt_id__in={prompt_id for prompt_id, _ in chunk}, content_hash__in={digest for _, digest in chunk}
        ).values_list("prompt_id", "content_hash", "id")
        found.update({(prompt_id, digest): pk for prompt_id, digest, pk in rows})
    return found


def _attention_checks_create(
    *, study: Study, checks: list[_AttentionCheck], prompt_ids: dict[str, int],
    response_ids: dict[tuple[int, str], int],
) -> tuple[int, int]:
    wanted: dict[tuple[int, int], Pair] = {}
    for check in checks:
        prompt_id = prompt_ids[check.prompt_text]
        good, bad = response_ids[(prompt_id, check.good)], response_ids[(prompt_id, check.bad)]
        low, high = sorted((good, bad))
        wanted[(low, high)] = Pair(
            study=study, prompt_id=prompt_id, response_a_id=low, response_b_id=high,
            origin=Pair.Origin.RESEARCHER, is_attention_check=True, correct_response_id=good,
        )
    existing = pairs_existing(keys=list(wanted))
    Pair.objects.bulk_create(
        [pair for key, pair in wanted.items() if key not in existing], batch_size=1000, ignore_conflicts=True
    )
    created = len(wanted) - len(existing & set(wanted))
    return created, len(wanted) - created


def pairs_existing(*, keys: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """Which canonical (response_a_id, response_b_id) pairs already exist."""
    found: set[tuple[int, int]] = set()
    for start in range(0, len(keys), LOOKUP_CHUNK):
        chunk = keys[start:start + LOOKUP_CHUNK]
        rows = Pair.objects.filter(
            response_a_id__in={a for a, _ in chunk}, response_b_id__in={b for _, b in chunk}
        ).values_list("response_a_id", "response_b_id")
        wanted = set(chunk)
        found.update(row for row in rows if row in wanted)
    return found


def json_type_name(value: Any) -> str:
    """How a JSON value's type reads in an error message ('a string', 'null', ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _human_bytes(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):g} MB"
    if size >= 1024:
        return f"{size / 1024:g} KB"
    return f"{size} bytes"


# --- Import kinds ----------------------------------------------------------------------------


class ImportResult(Protocol):
    def summary(self) -> str: ...


# The comparisons importer writes participants and judgments, so it lives in annotation, and
# elicitation may not import annotation (the import contract in pyproject.toml). The page and
# the API here still offer both kinds, so the importers are named and resolved when used.
IMPORT_KINDS: dict[str, tuple[str, str]] = {
    "responses": ("elicitation.imports.responses_import", "elicitation.imports.responses_import_records"),
    "comparisons": ("annotation.comparisons.comparisons_import", "annotation.comparisons.comparisons_import_records"),
}


def import_file_run(*, study: Study, kind: str, data: bytes, filename: str = "") -> ImportResult:
    """Run the importer of `kind` ('responses' or 'comparisons') on a file's bytes."""
    if kind == "responses":
        return responses_import(study=study, data=data, file_format=import_format_guess(filename=filename, data=data))
    file_importer: Callable[..., ImportResult] = import_string(IMPORT_KINDS[kind][0])
    return file_importer(study=study, data=data)


def import_records_run(*, study: Study, kind: str, records: list[Any]) -> ImportResult:
    """Run the importer of `kind` on already-parsed objects (the API's `{"lines": [...]}`)."""
    records_importer: Callable[..., ImportResult] = import_string(IMPORT_KINDS[kind][1])
    return records_importer(study=study, records=records)
