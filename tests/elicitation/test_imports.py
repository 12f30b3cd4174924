"""Importing prompts and responses: all or nothing, `line N:` errors, no duplicates on re-import."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import pytest

from elicitation.imports import (
    ImportRejected,
    import_format_guess,
    responses_import,
    responses_import_records,
)
from elicitation.models import Pair, Prompt, Response, content_hash
from elicitation.pool import pool_extend_for_prompts
from tests.factories import PromptFactory, ResponseFactory, StudyFactory

DATA = Path(__file__).resolve().parent.parent / "data"


def _jsonl(*objects: object) -> bytes:
    return "".join(json.dumps(obj) + "\n" for obj in objects).encode("utf-8")


def _nothing_written() -> bool:
    return not Prompt.objects.exists() and not Response.objects.exists() and not Pair.objects.exists()


@pytest.fixture
def study(db):
    return StudyFactory()


def test_jsonl_import_creates_prompts_responses_pool_and_attention_check(study) -> None:
    result = responses_import(study=study, data=(DATA / "responses_small.jsonl").read_bytes(), file_format="jsonl")

    assert (result.prompts_created, result.responses_created) == (3, 7)
    assert (result.attention_checks_created, result.pairs_created) == (1, 3 + 1)
    plants = Prompt.objects.get(study=study, external_id="plants")
    assert plants.content_hash == content_hash(plants.text)
    assert list(plants.responses.values_list("source", flat=True)) == ["model-a", "model-b", "model-c"]
    check = Pair.objects.get(study=study, is_attention_check=True)
    assert check.correct_response.text == "Blue."
    assert check.origin == Pair.Origin.RESEARCHER
    assert check.response_a_id < check.response_b_id
    assert Pair.objects.filter(study=study, is_attention_check=False, origin=Pair.Origin.POOL).count() == 4


def test_reimporting_the_same_file_duplicates_nothing(study) -> None:
    data = (DATA / "responses_small.jsonl").read_bytes()
    responses_import(study=study, data=data, file_format="jsonl")

    again = responses_import(study=study, data=data, file_format="jsonl")

    assert (again.prompts_created, again.prompts_existing) == (0, 3)
    assert (again.responses_created, again.responses_existing) == (0, 7)
    assert (again.attention_checks_created, again.attention_checks_existing, again.pairs_created) == (0, 1, 0)
    assert (Prompt.objects.count(), Response.objects.count(), Pair.objects.count()) == (3, 7, 5)


def test_csv_import_groups_rows_by_prompt_and_reuses_jsonl_rows(study) -> None:
    responses_import(study=study, data=(DATA / "responses_small.jsonl").read_bytes(), file_format="jsonl")

    result = responses_import(study=study, data=(DATA / "responses_small.csv").read_bytes(), file_format="csv")

    assert (result.prompts_created, result.prompts_existing) == (1, 1)
    assert (result.responses_created, result.responses_existing) == (3, 1)
    limerick = Prompt.objects.get(study=study, text="Write a limerick about a cat")
    assert limerick.responses.first().text == "There once was a cat named Lou,\nwho slept in a size-seven shoe."
    plants = Prompt.objects.get(study=study, external_id="plants")
    assert plants.responses.count() == 4
    assert plants.pairs.count() == 6  # every pair of its four responses


def test_same_prompt_in_two_studies_is_imported_into_each(study) -> None:
    other = StudyFactory()
    data = _jsonl({"prompt": "Shared?", "responses": ["yes", "no"]})
    responses_import(study=study, data=data, file_format="jsonl")

    result = responses_import(study=other, data=data, file_format="jsonl")

    assert (result.prompts_created, result.responses_created, result.pairs_created) == (1, 2, 1)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([b'{"prompt": "ok", "responses": ["a", "b"]}', b'{"prompt": "broken", "responses": ["a"'],
         "line 2: not valid JSON"),
        ([b'["a", "b"]'], "line 1: expected a JSON object, got a list"),
        ([b'{"responses": ["a", "b"]}'], "line 1: missing field 'prompt'"),
        ([b'{"prompt": "p"}'], "line 1: missing field 'responses'"),
        ([b'{"prompt": "p", "responses": []}'], "line 1: 'responses' must be a non-empty list of strings"),
        ([b'{"prompt": "p", "responses": ["a", 3]}'], "line 1: response 2 must be a non-empty string, got a number"),
        ([b'{"prompt": "  ", "responses": ["a"]}'], "line 1: 'prompt' is empty"),
        ([b'{"prompt": "p", "respones": ["a"]}'], "line 1: unknown field 'respones'"),
        ([b'{"prompt": "p", "responses": ["a", "b"], "sources": ["x"]}'],
         "line 1: 'sources' has 1 entries but 'responses' has 2"),
        ([b'{"prompt": "p", "responses": ["a", "b", "c"], "attention_check": true}'],
         "line 1: an attention check needs exactly two different responses"),
        ([b'{"prompt": "p", "responses": ["a", "b"], "attention_check": "yes"}'],
         "line 1: 'attention_check' must be true or false"),
    ],
)
def test_bad_jsonl_line_rejects_the_file_and_writes_nothing(study, lines: list[bytes], expected: str) -> None:
    with pytest.raises(ImportRejected) as rejected:
        responses_import(study=study, data=b"\n".join(lines) + b"\n", file_format="jsonl")

    assert any(error.startswith(expected) for error in rejected.value.errors), rejected.value.errors
    assert _nothing_written()


def test_one_bad_line_after_many_good_ones_writes_nothing(study) -> None:
    good = [{"prompt": f"prompt {i}", "responses": ["one", "two", "three"]} for i in range(50)]
    data = _jsonl(*good) + b'{"prompt": "last", "responses": "not a list"}\n'

    with pytest.raises(ImportRejected) as rejected:
        responses_import(study=study, data=data, file_format="jsonl")

    assert rejected.value.errors == ["line 51: 'responses' must be a non-empty list of strings"]
    assert _nothing_written()


def test_many_errors_are_capped_with_a_count_of_the_rest(study) -> None:
    data = b"not json\n" * 30

    with pytest.raises(ImportRejected) as rejected:
        responses_import(study=study, data=data, file_format="jsonl")

    assert len(rejected.value.errors) == 21
    assert rejected.value.errors[0].startswith("line 1: not valid JSON")
    assert rejected.value.errors[-1] == "... and 10 more errors not shown"


@pytest.mark.parametrize(
    ("csv_text", "expected"),
    [
        ("prompt,answer\np,a\n", "line 1: missing column 'response'"),
        ("prompt,response,model\np,a,x\n", "line 1: unknown column 'model'"),
        ("prompt,response\np,a\np\n", "line 3: expected 2 cells like the header, got 1"),
        ("prompt,response\np,a\n,b\n", "line 3: 'prompt' is empty"),
        ("prompt,response\np,a\np,\n", "line 3: 'response' is empty"),
        ("prompt,response\n", "The file has a header but no rows."),
        ('prompt,response\np,"a\nb\n', "line 2: not valid CSV"),
    ],
)
def test_bad_csv_rejects_the_file_and_writes_nothing(study, csv_text: str, expected: str) -> None:
    with pytest.raises(ImportRejected) as rejected:
        responses_import(study=study, data=csv_text.encode(), file_format="csv")

    assert rejected.value.errors[0].startswith(expected), rejected.value.errors
    assert _nothing_written()


def test_non_utf8_file_gets_a_clear_error(study) -> None:
    data = '{"prompt": "ok", "responses": ["a"]}\n{"prompt": "café", "responses": ["a"]}\n'.encode("latin-1")

    with pytest.raises(ImportRejected) as rejected:
        responses_import(study=study, data=data, file_format="jsonl")

    assert rejected.value.errors[0].startswith("line 2: the file is not UTF-8 text")
    assert _nothing_written()


def test_utf8_byte_order_mark_is_accepted(study) -> None:
    result = responses_import(study=study, data=b"\xef\xbb\xbfprompt,response\np,a\n", file_format="csv")

    assert result.responses_created == 1


@pytest.mark.parametrize("data", [b"", b"\n  \n"])
def test_empty_file_gets_a_clear_error(study, data: bytes) -> None:
    with pytest.raises(ImportRejected) as rejected:
        responses_import(study=study, data=data, file_format="jsonl")

    assert rejected.value.errors == ["The file is empty."]


def test_oversized_file_is_refused(study, settings) -> None:
    settings.POLYPHONY_IMPORT_MAX_BYTES = 100
    data = _jsonl({"prompt": "p" * 200, "responses": ["a"]})

    with pytest.raises(ImportRejected) as rejected:
        responses_import(study=study, data=data, file_format="jsonl")

    assert rejected.value.errors == ["The file is larger than the import limit of 100 bytes."]
    assert _nothing_written()


def test_json_lines_body_is_validated_like_a_file(study) -> None:
    with pytest.raises(ImportRejected) as rejected:
        responses_import_records(study=study, records=[{"prompt": "p", "responses": ["a"]}, "text"])

    assert rejected.value.errors == ["line 2: expected a JSON object, got a string"]
    assert _nothing_written()


def test_format_is_guessed_from_name_then_content() -> None:
    assert import_format_guess(filename="x.CSV", data=b"{") == "csv"
    assert import_format_guess(filename="upload", data=b'\xef\xbb\xbf {"prompt"') == "jsonl"
    assert import_format_guess(filename="upload", data=b"prompt,response") == "csv"


# --- The pair pool -----------------------------------------------------------------------------


def test_pool_pairs_are_canonical_and_idempotent(study) -> None:
    prompt = PromptFactory(study=study)
    responses = [ResponseFactory(prompt=prompt) for _ in range(5)]

    assert pool_extend_for_prompts(study=study, prompt_ids=[prompt.pk]) == 10
    assert pool_extend_for_prompts(study=study, prompt_ids=[prompt.pk]) == 0
    pairs = set(Pair.objects.filter(prompt=prompt).values_list("response_a_id", "response_b_id"))
    assert pairs == {(a.pk, b.pk) for a, b in combinations(responses, 2)}


def test_pool_cap_spreads_pairs_evenly_over_responses(study, settings) -> None:
    settings.POLYPHONY_PAIRS_PER_PROMPT_CAP = 12
    prompt = PromptFactory(study=study)
    responses = [ResponseFactory(prompt=prompt) for _ in range(8)]  # 28 possible pairs

    assert pool_extend_for_prompts(study=study, prompt_ids=[prompt.pk]) == 12

    degree = {r.pk: 0 for r in responses}
    for a, b in Pair.objects.filter(prompt=prompt).values_list("response_a_id", "response_b_id"):
        degree[a] += 1
        degree[b] += 1
    assert max(degree.values()) - min(degree.values()) <= 1
    # Deterministic: the same responses always give the same pairs.
    first = set(Pair.objects.filter(prompt=prompt).values_list("response_a_id", "response_b_id"))
    Pair.objects.filter(prompt=prompt).delete()
    pool_extend_for_prompts(study=study, prompt_ids=[prompt.pk])
    assert set(Pair.objects.filter(prompt=prompt).values_list("response_a_id", "response_b_id")) == first


def test_pool_counts_existing_pairs_against_the_cap(study, settings) -> None:
    settings.POLYPHONY_PAIRS_PER_PROMPT_CAP = 3
    prompt = PromptFactory(study=study)
    for _ in range(3):
        ResponseFactory(prompt=prompt)
    pool_extend_for_prompts(study=study, prompt_ids=[prompt.pk])
    ResponseFactory(prompt=prompt)

    assert pool_extend_for_prompts(study=study, prompt_ids=[prompt.pk]) == 0
    assert Pair.objects.filter(prompt=prompt).count() == 3


def test_pool_leaves_out_attention_check_responses(study) -> None:
    data = _jsonl(
        {"prompt": "Capital of France?", "responses": ["Paris.", "Gloves are warm."], "attention_check": True},
        {"prompt": "Capital of France?", "responses": ["Paris is the capital.", "It's Paris, on the Seine."]},
    )

    result = responses_import(study=study, data=data, file_format="jsonl")

    assert result.pairs_created == 1
    pool = Pair.objects.get(study=study, is_attention_check=False)
    assert {pool.response_a.text, pool.response_b.text} == {"Paris is the capital.", "It's Paris, on the Seine."}
