"""The researcher insight dashboard: request a computation, run it, store an AnalyticsSnapshot.

Rows come from `annotation.selectors_insight` as tuples, the arithmetic from
`modeling.core.analytics` on arrays, figures from `modeling.analytics_plots`. The dashboard only
ever reads the stored snapshot, so a page view costs a couple of queries however big the study.
"""

from __future__ import annotations

import functools
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.selectors_insight import (
    insight_excluded_ids,
    insight_judgments,
    insight_pairs,
    insight_participants,
    insight_responses,
)
from modeling.core import analytics as core
from modeling.models import AnalyticsSnapshot, ParticipantWeights
from modeling.selectors import study_get_by_id, training_run_current

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

# Flags: the bars a participant must clear. Reliability is agreement with their own latent group.
RELIABILITY_MIN = 0.65
RELIABILITY_MIN_EVIDENCE = 8  # informative judgments before reliability may flag anyone
ATTENTION_MIN = 0.8
CONSISTENCY_MIN = 0.6
TOP_DIVISIVE = 50
TOP_BRIDGING = 20
TOP_PER_GROUP = 3
ALPHA_RESAMPLES = 200
BT_RESAMPLES = 30
MAX_ATTRIBUTE_VALUES = 12  # a categorical attribute with more distinct values is not grouped by
TEXT_PREVIEW = 160


class AnalyticsError(Exception):
    """A computation that cannot run (e.g. no judgments); the message is shown to the researcher."""


def study_analytics_request(
    *, study_id: int, requested_by: AbstractBaseUser | None = None, enqueue: bool = True,
) -> tuple[AnalyticsSnapshot, bool]:
    """Queue a computation; returns (the active snapshot, whether it is new).

    A second request while one is queued or running joins it (the partial unique constraint
    settles a race between two clicks).
    """
    active = AnalyticsSnapshot.objects.filter(study_id=study_id, status__in=AnalyticsSnapshot.ACTIVE_STATUSES).first()
    if active is not None:
        return active, False
    try:
        with transaction.atomic():
            snapshot = AnalyticsSnapshot.objects.create(study_id=study_id, requested_by=requested_by)
            if enqueue:
                transaction.on_commit(functools.partial(_analytics_enqueue, snapshot_id=snapshot.pk))
    except IntegrityError:
        return AnalyticsSnapshot.objects.get(study_id=study_id, status__in=AnalyticsSnapshot.ACTIVE_STATUSES), False
    return snapshot, True


def _analytics_enqueue(*, snapshot_id: int) -> None:
    from modeling.analytics_tasks import compute_study_analytics

    compute_study_analytics.delay(snapshot_id)


def study_analytics_compute(
    *, study_id: int, snapshot_id: int | None = None, progress: Progress | None = None,
) -> AnalyticsSnapshot:
    """Compute a study's insight and store it in `snapshot_id` (or a new snapshot).

    The snapshot is claimed queued → running by compare-and-swap, so two deliveries of the same
    task never both compute. A failure is stored on the snapshot with its message.
    """
    if snapshot_id is None:
        snapshot = AnalyticsSnapshot.objects.create(study_id=study_id, status=AnalyticsSnapshot.Status.QUEUED)
        snapshot_id = snapshot.pk
    claimed = AnalyticsSnapshot.objects.filter(pk=snapshot_id, status=AnalyticsSnapshot.Status.QUEUED).update(
        status=AnalyticsSnapshot.Status.RUNNING, progress=0.0, progress_message="loading judgments"
    )
    if not claimed:
        return AnalyticsSnapshot.objects.get(pk=snapshot_id)

    def report(fraction: float, message: str) -> None:
        AnalyticsSnapshot.objects.filter(pk=snapshot_id).update(progress=fraction, progress_message=message[:200])
        if progress is not None:
            progress(fraction, message)

    started = time.perf_counter()
    try:
        data, run_id = _analytics_data(study_id=study_id, report=report)
        report(0.85, "drawing figures")
        from modeling.analytics_plots import plots_render_all

        plots = plots_render_all(data=data)
    except AnalyticsError as exc:
        _fail(snapshot_id=snapshot_id, message=str(exc))
        return AnalyticsSnapshot.objects.get(pk=snapshot_id)
    except Exception as exc:  # a bug must not leave the snapshot "running" forever
        logger.exception("Analytics of study %s failed", study_id)
        _fail(snapshot_id=snapshot_id, message=f"{type(exc).__name__}: {exc}")
        return AnalyticsSnapshot.objects.get(pk=snapshot_id)
    AnalyticsSnapshot.objects.filter(pk=snapshot_id, status=AnalyticsSnapshot.Status.RUNNING).update(
        status=AnalyticsSnapshot.Status.DONE, data=data, plots=plots, run_id=run_id, progress=1.0,
        progress_message="done", duration_s=time.perf_counter() - started, finished_at=timezone.now(),
    )
    return AnalyticsSnapshot.objects.get(pk=snapshot_id)


def _fail(*, snapshot_id: int, message: str) -> None:
    AnalyticsSnapshot.objects.filter(pk=snapshot_id).update(
        status=AnalyticsSnapshot.Status.FAILED, error=message, finished_at=timezone.now()
    )


def _analytics_data(*, study_id: int, report: Progress) -> tuple[dict[str, Any], int | None]:
    study = study_get_by_id(study_id=study_id)
    participants = insight_participants(study_id=study_id)
    excluded = insight_excluded_ids(study_id=study_id)
    rows = insight_judgments(study_id=study_id)
    pairs = insight_pairs(study_id=study_id)
    responses = insight_responses(study_id=study_id)
    report(0.1, "arranging judgments")

    p_index = {pk: i for i, (pk, _, _) in enumerate(participants)}
    pair_index = {pk: i for i, (pk, *_rest) in enumerate(pairs)}
    r_index = {pk: i for i, (pk, *_rest) in enumerate(responses)}
    n_part = len(participants)

    checks = np.zeros(n_part)
    passed = np.zeros(n_part)
    durations: list[list[float]] = [[] for _ in range(n_part)]
    annotator, pair_of, outcome = [], [], []
    pair_first = {pk: a for pk, _, a, _ in pairs}
    for participant_id, pair_id, shown_first, choice, is_check, ok, served, answered in rows:
        i = p_index[participant_id]
        if served is not None:
            durations[i].append((answered - served).total_seconds())
        if is_check:
            if ok is not None:
                checks[i] += 1
                passed[i] += bool(ok)
            continue
        if pair_id not in pair_index:
            continue
        # Back to the pair's canonical order: choice is relative to the side shown first.
        if choice == "tie":
            y = 0.5
        else:
            y = 1.0 if (choice == "a") == (shown_first == pair_first[pair_id]) else 0.0
        annotator.append(i)
        pair_of.append(pair_index[pair_id])
        outcome.append(y)
    if not outcome:
        raise AnalyticsError("No preference judgments yet: nothing to analyse.")
    j = core.Judgments(
        np.asarray(annotator, np.int64), np.asarray(pair_of, np.int64), np.asarray(outcome, np.float64),
        n_part, len(pairs),
    )
    included = np.array([pk not in excluded for pk, _, _ in participants], bool)
    has_judgments = np.bincount(j.annotator, minlength=n_part) > 0
    fit_mask = included & has_judgments
    if not fit_mask.any():
        raise AnalyticsError("Every participant with judgments is excluded: nothing to analyse.")

    report(0.2, "finding latent groups")
    run = training_run_current(study=study)
    groups = _groups(j=j, run=run, participants=participants, fit_mask=fit_mask)
    labels, theta, source = groups.labels, groups.theta, groups.source
    k = theta.shape[1]

    report(0.35, "quality")
    reliability_labels = _reliability_groups(j=j, groups=groups, fit_mask=fit_mask)
    reliability = core.group_reliability_em(j, labels=reliability_labels, k=k, fit_mask=fit_mask)
    within, overall, _ = core.loo_agreement(j, labels=labels, k=k)
    consistency = core.self_consistency(j)
    medians = np.array([statistics.median(d) if d else np.nan for d in durations])
    time_z = core.time_robust_z(medians)
    group_map = _map(j=j, groups=groups)
    coords = group_map.pop("coords")
    n_judged = np.bincount(j.annotator, minlength=n_part)

    participant_data = []
    for i, (pk, external_id, attributes) in enumerate(participants):
        rate = passed[i] / checks[i] if checks[i] else None
        flags = []
        if rate is not None and rate < ATTENTION_MIN:
            flags.append("attention")
        if (reliability.evidence[i] >= RELIABILITY_MIN_EVIDENCE and np.isfinite(reliability.reliability[i])
                and reliability.reliability[i] < RELIABILITY_MIN):
            flags.append("unreliable")
        if np.isfinite(consistency[i]) and consistency[i] < CONSISTENCY_MIN:
            flags.append("inconsistent")
        if np.isfinite(time_z[i]) and time_z[i] < -core.TIME_OUTLIER_Z:
            flags.append("too fast")
        if np.isfinite(time_z[i]) and time_z[i] > core.TIME_OUTLIER_Z:
            flags.append("slow")
        participant_data.append({
            "id": pk, "external_id": external_id, "group": int(labels[i]) if n_judged[i] else None,
            "excluded": pk in excluded, "judgments": int(n_judged[i]),
            "attention_checks": int(checks[i]), "attention_rate": _num(rate),
            "consistency": _num(consistency[i]), "reliability": _num(reliability.reliability[i]),
            "reliability_evidence": int(reliability.evidence[i]),
            "reliability_group": int(reliability_labels[i]) if n_judged[i] else None,
            "agreement_group": _num(within[i]), "agreement_overall": _num(overall[i]),
            "median_seconds": _num(medians[i]), "time_z": _num(time_z[i]), "flags": flags,
            "x": _num(coords[i, 0]), "y": _num(coords[i, 1]),
            "attributes": {key: _attribute_value(v) for key, v in (attributes or {}).items()},
        })

    report(0.45, "agreement")
    attributes = _categorical_attributes(participant_data, mask=fit_mask)
    agreement = {
        "overall": core.krippendorff_alpha_ci(core.value_counts(j, annotator_mask=fit_mask), resamples=ALPHA_RESAMPLES),
        "groups": [
            {"group": g, **core.krippendorff_alpha_ci(
                core.value_counts(j, annotator_mask=fit_mask & (labels == g)), resamples=ALPHA_RESAMPLES, seed=g + 1)}
            for g in range(k)
        ],
        "demographics": {
            key: [
                {"value": value, **core.krippendorff_alpha_ci(
                    core.value_counts(j, annotator_mask=fit_mask & np.array(
                        [row["attributes"].get(key) == value for row in participant_data])),
                    resamples=ALPHA_RESAMPLES)}
                for value in values
            ]
            for key, values in attributes.items()
        },
    }
    association = []
    judged_ids = [i for i in range(n_part) if fit_mask[i]]
    for key in attributes:
        with_value = [i for i in judged_ids if participant_data[i]["attributes"].get(key) is not None]
        result = core.cramers_v([int(labels[i]) for i in with_value],
                                [str(participant_data[i]["attributes"][key]) for i in with_value])
        association.append({"attribute": key, **result})

    report(0.55, "divisive pairs and bridging responses")
    fit_j = _masked(j, fit_mask)
    wins, total = core.group_pair_counts(fit_j, labels=labels, k=k)
    pair_a = np.array([r_index[a] for _, _, a, _ in pairs], np.int64)
    pair_b = np.array([r_index[b] for _, _, _, b in pairs], np.int64)
    response_text = [(text, prompt) for _, _, text, prompt in responses]
    divisive = core.divisive_scores(wins, total)
    divisive_data = []
    for p in np.argsort(-divisive, kind="stable")[:TOP_DIVISIVE]:
        if divisive[p] <= 0:
            break
        divisive_data.append({
            "pair_id": pairs[p][0], "prompt": _preview(response_text[pair_a[p]][1]),
            "response_a": _preview(response_text[pair_a[p]][0]), "response_b": _preview(response_text[pair_b[p]][0]),
            "score": _num(divisive[p]),
            "groups": [{"p_a": _num((wins[p, g] + 1) / (total[p, g] + 2)), "n": int(total[p, g])} for g in range(k)],
        })
    rates = core.response_win_rates(wins, total, pair_a=pair_a, pair_b=pair_b, n_responses=len(responses))
    bridging = core.bridging_scores(rates)
    bridging_data = [
        {"response_id": responses[r][0], "response": _preview(response_text[r][0]), "prompt": _preview(response_text[r][1]),
         "score": _num(bridging[r]), "groups": [_num(x) for x in rates[r]]}
        for r in np.argsort(-np.nan_to_num(bridging, nan=-1), kind="stable")[:TOP_BRIDGING] if np.isfinite(bridging[r])
    ]
    sizes = np.bincount(labels[fit_mask], minlength=k)
    group_data = []
    for g in range(k):
        order = np.argsort(-np.nan_to_num(rates[:, g], nan=-1), kind="stable")
        seen = [r for r in order if np.isfinite(rates[r, g])]
        group_data.append({
            "group": g, "size": int(sizes[g]),
            "most_preferred": [_response_item(responses, r, rates[r, g]) for r in seen[:TOP_PER_GROUP]],
            "least_preferred": [_response_item(responses, r, rates[r, g]) for r in seen[::-1][:TOP_PER_GROUP]],
        })

    report(0.65, "Bradley-Terry rankings")
    prompt_ids = sorted({prompt_id for _, prompt_id, _, _ in responses})
    prompt_pos = {pk: i for i, pk in enumerate(prompt_ids)}
    prompt_of = np.array([prompt_pos[prompt_id] for _, prompt_id, _, _ in responses], np.int64)
    bt = [core.bradley_terry_bootstrap(fit_j, pair_a=pair_a, pair_b=pair_b, n_responses=len(responses),
                                       prompt_of=prompt_of, resamples=BT_RESAMPLES)]
    for g in range(k if k > 1 else 0):
        report(0.65 + 0.2 * (g + 1) / (k + 1), f"Bradley-Terry rankings of group {g + 1}")
        bt.append(core.bradley_terry_bootstrap(
            _masked(j, fit_mask & (labels == g)), pair_a=pair_a, pair_b=pair_b, n_responses=len(responses),
            prompt_of=prompt_of, resamples=BT_RESAMPLES, seed=g + 1))
    rankings: dict[int, dict[str, Any]] = {}
    for r, (response_id, prompt_id, text, prompt_text) in enumerate(responses):
        if not np.isfinite(bt[0][0][r]):
            continue
        entry = rankings.setdefault(prompt_id, {"prompt_id": prompt_id, "prompt": _preview(prompt_text),
                                                "figure": f"ranking--{prompt_id}", "responses": []})
        entry["responses"].append({
            "response_id": response_id, "response": _preview(text),
            "score": _num(bt[0][0][r]), "low": _num(bt[0][1][r]), "high": _num(bt[0][2][r]),
            "groups": [{"score": _num(s[0][r]), "low": _num(s[1][r]), "high": _num(s[2][r])} for s in bt[1:]],
        })
    for entry in rankings.values():
        entry["responses"].sort(key=lambda item: -(item["score"] if item["score"] is not None else -np.inf))

    data = {
        "computed_at": timezone.now().isoformat(),
        "group_source": source, "k": k, "k_selection": groups.k_selection, **group_map,
        "reliability_method": "one-coin Dawid-Skene EM within each latent group",
        "reliability_groups": ("the model's groups, refined by latent-class EM on the judgments"
                               if groups.weights is not None else "the latent groups"),
        "regrouped": int(((reliability_labels != labels) & (n_judged > 0)).sum()),
        "thresholds": {"reliability": RELIABILITY_MIN, "attention": ATTENTION_MIN, "consistency": CONSISTENCY_MIN,
                       "time_z": core.TIME_OUTLIER_Z},
        "counts": {
            "participants": n_part, "excluded": len(excluded), "judgments": len(outcome),
            "attention_checks": int(checks.sum()), "pairs_with_overlap": agreement["overall"]["units"],
            "flagged": sum(1 for row in participant_data if row["flags"] and not row["excluded"]),
        },
        "participants": participant_data, "agreement": agreement, "association": association,
        "groups": group_data, "attributes": {key: list(values) for key, values in attributes.items()},
        "divisive": divisive_data, "bridging": bridging_data,
        "rankings": [rankings[pk] for pk in prompt_ids if pk in rankings],
    }
    return data, (run.pk if run is not None and source.startswith("model") else None)


@dataclass(frozen=True)
class _LatentGroups:
    labels: np.ndarray  # [n_participants] hard group per participant
    theta: np.ndarray  # [n_pairs, k] P(canonical a | group)
    source: str
    k_selection: dict[str, float]
    weights: np.ndarray | None = None  # [n_participants, k] the model's simplex weights; NaN rows: unseen


def _groups(
    *, j: core.Judgments, run: Any, participants: list[tuple[int, str, dict[str, Any]]], fit_mask: np.ndarray,
) -> _LatentGroups:
    """Latent groups: the current reward model's (argmax weight) when it has them, else a
    latent-class EM over the judgments. Annotators the model never saw join their likeliest group."""
    if run is not None and (run.groups_chosen or 1) > 1:
        k = int(run.groups_chosen)
        rows = ParticipantWeights.objects.filter(run=run).values_list("participant_id", "group", "weights")
        by_participant = {pk: (group, w) for pk, group, w in rows if 0 <= group < k}
        known = np.array([pk in by_participant for pk, _, _ in participants], bool)
        if (known & fit_mask).sum() >= 2:
            labels = np.array([by_participant.get(pk, (0, None))[0] for pk, _, _ in participants], np.int64)
            hard = np.eye(k)[labels] * (known & fit_mask)[:, None]
            theta = core.group_theta(j, hard)
            likeliest = core.annotator_log_lik(j, theta).argmax(axis=1)
            labels = np.where(known, labels, likeliest)
            weights = np.full((len(participants), k), np.nan)
            for i, (pk, _, _) in enumerate(participants):
                w = by_participant.get(pk, (0, None))[1]
                if isinstance(w, list) and len(w) == k:
                    weights[i] = w
            return _LatentGroups(labels, theta, f"model run {run.pk}", {}, weights)
    fit, scores = core.latent_classes_choose(j, fit_mask=fit_mask)
    return _LatentGroups(fit.labels, fit.theta, "latent-class EM", scores)


def _reliability_groups(*, j: core.Judgments, groups: _LatentGroups, fit_mask: np.ndarray) -> np.ndarray:
    """The groups reliability is estimated in: the latent groups of the judgments themselves.

    The EM's groups already are. A reward model's groups come from a model over response
    embeddings and need not fit the choices: a minority member it places among people who choose
    otherwise would look careless there. So they are refined by the latent-class EM on the
    judgments, started from the model's groups (same K, same numbering); a random clicker fits no
    group whichever it joins, and stays unreliable.
    """
    if groups.weights is None:
        return groups.labels
    k = groups.theta.shape[1]
    return core.latent_classes_fit(j, k=k, fit_mask=fit_mask, init=np.eye(k)[groups.labels]).labels


def _map(*, j: core.Judgments, groups: _LatentGroups) -> dict[str, Any]:
    """Coordinates of the group map and how to read them.

    With a model: its participants' simplex weights (a line for K = 2, the triangle for K = 3,
    PCA beyond). Without one, or for K = 1: how often each participant agrees with each group's
    majority side (PCA unless K = 2). "coords" is popped by the caller; the rest goes to `data`.
    """
    k = groups.theta.shape[1]
    if groups.weights is not None:
        coords, kind, explained = core.latent_weight_coordinates(groups.weights)
        axes = {"line": ["weight on group 2 (0 = pure group 1)", ""], "simplex": ["", ""]}.get(
            kind, ["component 1 of the weights", "component 2 of the weights"])
        return {"coords": coords, "map_source": "model weights", "map_kind": kind, "map_axes": axes,
                "map_explained": explained, "map_unplaced": int((~np.isfinite(coords[:, 0])).sum())}
    coords, explained = core.map_coordinates(core.group_agreement_features(j, groups.theta))
    axes = ([f"agreement with group {g + 1}" for g in range(2)] if k == 2 and not explained
            else ["component 1", "component 2"])
    return {"coords": coords, "map_source": "agreement", "map_kind": "agreement", "map_axes": axes,
            "map_explained": explained, "map_unplaced": 0}


def _masked(j: core.Judgments, mask: np.ndarray) -> core.Judgments:
    keep = mask[j.annotator]
    return core.Judgments(j.annotator[keep], j.pair[keep], j.outcome[keep], j.n_annotators, j.n_pairs)


def _categorical_attributes(participants: list[dict[str, Any]], *, mask: np.ndarray) -> dict[str, list[Any]]:
    """Demographic keys with 2..MAX_ATTRIBUTE_VALUES distinct values among analysed participants."""
    values: dict[str, set[Any]] = {}
    for i, row in enumerate(participants):
        if mask[i]:
            for key, value in row["attributes"].items():
                if value is not None:
                    values.setdefault(key, set()).add(value)
    return {key: sorted(v, key=str) for key, v in sorted(values.items()) if 2 <= len(v) <= MAX_ATTRIBUTE_VALUES}


def _attribute_value(value: Any) -> Any:
    """Lists (multi-choice answers) become one readable string; numbers and strings stay."""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return None
    return value


def _response_item(responses: list[tuple[int, int, str, str]], r: int, rate: float) -> dict[str, Any]:
    return {"response_id": responses[r][0], "response": _preview(responses[r][2]),
            "prompt": _preview(responses[r][3]), "win_rate": _num(rate)}


def _preview(text: str) -> str:
    return text if len(text) <= TEXT_PREVIEW else text[: TEXT_PREVIEW - 1] + "…"


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return round(x, 4) if np.isfinite(x) else None
