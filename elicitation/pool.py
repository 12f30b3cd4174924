"""The pair pool: which pairs of responses to the same prompt annotators may be shown."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from itertools import islice

from django.conf import settings

from elicitation.models import Pair, Response, Study

# Prompts handled per round of queries (keeps `IN (...)` lists short on SQLite).
PROMPT_CHUNK = 200


def pool_extend_for_prompts(*, study: Study, prompt_ids: Iterable[int]) -> int:
    """Add the missing pool pairs for these prompts; returns how many pairs were created.

    Every pair of responses to the same prompt becomes a Pair, up to
    POLYPHONY_PAIRS_PER_PROMPT_CAP pool pairs per prompt. Under the cap the choice is
    deterministic and spread evenly over the responses (see `_balanced_pairs`), so no response
    is left out while another is in every pair. Responses that belong to an attention check
    are left out: their "wrong" answer is deliberately broken. Idempotent: existing pairs are
    kept and counted against the cap.
    """
    cap = settings.POLYPHONY_PAIRS_PER_PROMPT_CAP
    ordered = sorted(set(prompt_ids))
    created = 0
    for start in range(0, len(ordered), PROMPT_CHUNK):
        chunk = ordered[start:start + PROMPT_CHUNK]
        new_pairs = _missing_pairs(study=study, prompt_ids=chunk, cap=cap)
        # ignore_conflicts: a concurrent import adding the same pair must not fail this one.
        Pair.objects.bulk_create(new_pairs, batch_size=1000, ignore_conflicts=True)
        created += len(new_pairs)
    return created


def _missing_pairs(*, study: Study, prompt_ids: list[int], cap: int) -> list[Pair]:
    responses: dict[int, list[int]] = defaultdict(list)
    for prompt_id, response_id in (
        Response.objects.filter(prompt_id__in=prompt_ids).order_by("prompt_id", "id").values_list("prompt_id", "id")
    ):
        responses[prompt_id].append(response_id)
    existing: dict[int, set[tuple[int, int]]] = defaultdict(set)
    pool_counts: dict[int, int] = defaultdict(int)
    checked: set[int] = set()
    for prompt_id, a, b, is_check in Pair.objects.filter(prompt_id__in=prompt_ids).values_list(
        "prompt_id", "response_a_id", "response_b_id", "is_attention_check"
    ):
        existing[prompt_id].add((a, b))
        if is_check:
            checked.update((a, b))
        else:
            pool_counts[prompt_id] += 1
    new_pairs: list[Pair] = []
    for prompt_id in prompt_ids:
        eligible = [r for r in responses[prompt_id] if r not in checked]
        chosen = _balanced_pairs(ids=eligible, existing=existing[prompt_id], room=cap - pool_counts[prompt_id])
        new_pairs += [Pair(study=study, prompt_id=prompt_id, response_a_id=a, response_b_id=b) for a, b in chosen]
    return new_pairs


def _balanced_pairs(*, ids: list[int], existing: set[tuple[int, int]], room: int) -> list[tuple[int, int]]:
    """Up to `room` new pairs, each time the candidate whose responses have the fewest pairs so far.

    Candidates come in the cyclic order of `_spread_pairs` (ties go to the earlier one), and only
    the first `room + 2n` missing pairs are considered: enough to balance, and it keeps the
    greedy choice cheap when a prompt has hundreds of responses.
    """
    if room <= 0:
        return []
    degree = dict.fromkeys(ids, 0)
    for a, b in existing:
        if a in degree and b in degree:
            degree[a] += 1
            degree[b] += 1
    candidates = list(islice((p for p in _spread_pairs(ids) if p not in existing), room + 2 * len(ids)))
    chosen: list[tuple[int, int]] = []
    while candidates and len(chosen) < room:
        best = min(
            range(len(candidates)),
            key=lambda i: (max(degree[candidates[i][0]], degree[candidates[i][1]]),
                           degree[candidates[i][0]] + degree[candidates[i][1]], i),
        )
        a, b = candidates.pop(best)
        degree[a] += 1
        degree[b] += 1
        chosen.append((a, b))
    return chosen


def _spread_pairs(ids: list[int]) -> Iterator[tuple[int, int]]:
    """All pairs of `ids` in canonical order (smaller id first), nearest on a circle first.

    A cyclic design: with the responses on a circle, first every pair of neighbours (distance
    1), then distance 2, and so on. Each distance adds n pairs in which every response appears
    twice (once at distance n/2), so every response is reached early.
    """
    n = len(ids)
    for distance in range(1, n // 2 + 1):
        for i in range(n):
            if 2 * distance == n and i >= distance:
                break  # at half the circle, pair (i, i + n/2) equals (i + n/2, i): take each once
            a, b = ids[i], ids[(i + distance) % n]
            yield (a, b) if a < b else (b, a)
