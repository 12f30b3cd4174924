"""Figures of the insight dashboard, drawn by matplotlib (Agg) from a snapshot's `data`.

SVGs are drawn once when a snapshot is computed and stored with it; PNGs are drawn on request
for downloads. Text stays text in the SVG (`svg.fonttype = none`): smaller, and screen readers
and search find it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

PLOT_NAMES = ("map", "agreement", "reliability", "times", "divisive", "bridging", "group_sizes")
# A map coloured by a demographic attribute is named "map--<attribute key>".
ATTRIBUTE_MAP_PREFIX = "map--"
# One prompt's Bradley-Terry ranking is "ranking--<prompt id>": drawn on request only (a study may
# have hundreds of prompts; drawing them all would dominate the computation).
RANKING_PREFIX = "ranking--"
COLOURS = ["#1b6ca8", "#d1495b", "#2e933c", "#edae49", "#6b4c9a", "#00798c", "#8d6a9f", "#9c6644"]
# Figures are built with `Figure` directly, not pyplot: no global figure registry to leak in a
# long-running worker, no GUI backend, and a second faster to import.
# `text.parse_math` off: response texts and attribute values are user data, and "$5 or $10" must
# print as written, not fail as mathtext.
matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "polyphony", "font.size": 9,
                            "text.parse_math": False})


class UnknownPlot(Exception):
    pass


def plot_names(*, data: dict[str, Any]) -> list[str]:
    """The figures drawn with every snapshot (and inlined in the pages)."""
    return [*PLOT_NAMES, *(ATTRIBUTE_MAP_PREFIX + key for key in data.get("attributes", {}))]


def ranking_plot_names(*, data: dict[str, Any]) -> list[str]:
    """The per-prompt ranking figures, drawn when downloaded."""
    return [f"{RANKING_PREFIX}{prompt['prompt_id']}" for prompt in data.get("rankings", [])]


def plots_render_all(*, data: dict[str, Any]) -> dict[str, str]:
    """Every figure of a snapshot as an inline-ready SVG string (no XML prologue)."""
    return {name: plot_render(data=data, name=name, fmt="svg").decode() for name in plot_names(data=data)}


def plot_render(*, data: dict[str, Any], name: str, fmt: str) -> bytes:
    """One figure as SVG or PNG bytes; UnknownPlot for a name the snapshot has no figure for."""
    if fmt not in ("svg", "png"):
        raise UnknownPlot(name)
    if name.startswith(RANKING_PREFIX):
        prompt = next((p for p in data.get("rankings", []) if f"{RANKING_PREFIX}{p['prompt_id']}" == name), None)
        if prompt is None:
            raise UnknownPlot(name)
        fig = _ranking(data, prompt)
    elif name not in plot_names(data=data):
        raise UnknownPlot(name)
    elif name.startswith(ATTRIBUTE_MAP_PREFIX):
        fig = _map(data, attribute=name[len(ATTRIBUTE_MAP_PREFIX):])
    else:
        fig = _DRAW[name](data)
    buffer = io.BytesIO()
    # The constrained layout fits labels in one pass; bbox_inches="tight" would draw everything twice.
    fig.savefig(buffer, format=fmt, dpi=150 if fmt == "png" else 72)
    out = buffer.getvalue()
    if fmt == "svg":
        # Inline SVG: drop the XML prologue and fixed size so CSS can make it fluid on a phone.
        text = out.decode()
        text = text[text.index("<svg"):]
        text = re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1', text, count=1)
        out = text.encode()
    return out


def _figure(width: float = 6.0, height: float = 3.6) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _map(data: dict[str, Any], attribute: str | None = None) -> Figure:
    # The triangle is drawn square (equal aspect): a narrower figure leaves larger text on a phone.
    fig, ax = _figure(4.6, 4.2) if data.get("map_kind") == "simplex" else _figure(5.5, 4.2)
    rows = [p for p in data["participants"] if p["x"] is not None and p["judgments"]]
    if attribute is None:
        keys = [p["group"] for p in rows]
        legend = {g: f"group {g + 1}" for g in range(data["k"])}
    else:
        values = data["attributes"].get(attribute, [])
        keys = [values.index(p["attributes"].get(attribute)) if p["attributes"].get(attribute) in values else -1
                for p in rows]
        legend = {i: str(v) for i, v in enumerate(values)} | {-1: "no answer"}
    for key, label in legend.items():
        chosen = [p for p, k in zip(rows, keys, strict=True) if k == key]
        if not chosen:
            continue
        colour = "#999999" if key == -1 else COLOURS[key % len(COLOURS)]
        ax.scatter([p["x"] for p in chosen], [p["y"] for p in chosen], s=22, c=colour, label=label, alpha=0.8,
                   edgecolors="white", linewidths=0.4)
    flagged = [p for p in rows if p["flags"]]
    if flagged:
        ax.scatter([p["x"] for p in flagged], [p["y"] for p in flagged], s=70, facecolors="none",
                   edgecolors="black", linewidths=0.8, label="flagged")
    kind = data.get("map_kind", "agreement")
    if kind == "simplex":
        _simplex_frame(ax)
    elif kind == "line":
        ax.axhline(0, color="#cccccc", lw=0.8, zorder=0)
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.6, 0.6)
        ax.set_yticks([])
        ax.spines[["left"]].set_visible(False)
    ax.set_xlabel(data["map_axes"][0])
    ax.set_ylabel(data["map_axes"][1])
    title = "Participants by latent group" if attribute is None else f"Participants by {attribute}"
    if data.get("map_source") == "model weights":
        title += ": the model's group weights"
    ax.set_title(title)
    ax.legend(fontsize=7, frameon=False, loc="best")
    return fig


def _simplex_frame(ax: Any) -> None:
    """The K = 3 simplex: a triangle whose corners are the pure groups (barycentric coordinates)."""
    h = 3**0.5 / 2
    ax.plot([0, 1, 0.5, 0], [0, 0, h, 0], color="#bbbbbb", lw=0.8, zorder=0)
    for (x, y), label, align in (((0, 0), "group 1", "right"), ((1, 0), "group 2", "left"),
                                 ((0.5, h), "group 3", "center")):
        ax.annotate(label, (x, y), xytext=(0, 6 if align == "center" else -10), textcoords="offset points",
                    ha=align, fontsize=8, color="#555555")
    ax.set_aspect("equal")
    ax.set_xlim(-0.15, 1.15)
    ax.set_ylim(-0.12, h + 0.12)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines[["left", "bottom"]].set_visible(False)


def _agreement(data: dict[str, Any]) -> Figure:
    agreement = data["agreement"]
    rows = [("overall", agreement["overall"], "#444444")]
    rows += [(f"group {g['group'] + 1}", g, COLOURS[g["group"] % len(COLOURS)]) for g in agreement["groups"]]
    for key, values in agreement["demographics"].items():
        rows += [(f"{key}: {v['value']}", v, "#999999") for v in values]
    rows = [r for r in rows if r[1]["alpha"] is not None]
    fig, ax = _figure(6.0, 0.8 + 0.28 * max(len(rows), 1))
    for y, (_label, value, colour) in enumerate(rows):
        alpha = value["alpha"]
        low = value["low"] if value["low"] is not None else alpha
        high = value["high"] if value["high"] is not None else alpha
        # A percentile interval need not contain the point estimate; error bars must not be negative.
        ax.errorbar(alpha, y, xerr=[[max(alpha - low, 0)], [max(high - alpha, 0)]], fmt="o", color=colour, capsize=3)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.axvline(0, color="#cccccc", lw=0.8)
    ax.set_xlabel("Krippendorff's alpha (nominal), 95% bootstrap CI")
    ax.set_title("Agreement overall and within groups")
    return fig


def _reliability(data: dict[str, Any]) -> Figure:
    fig, ax = _figure(5.5, 4.0)
    rows = [p for p in data["participants"] if p["reliability"] is not None and p["agreement_overall"] is not None]
    for flagged, colour, label in ((False, "#1b6ca8", "not flagged"), (True, "#d1495b", "flagged")):
        chosen = [p for p in rows if bool(p["flags"]) == flagged]
        ax.scatter([p["agreement_overall"] for p in chosen], [p["reliability"] for p in chosen], s=20, c=colour,
                   label=label, alpha=0.8)
    ax.axhline(data["thresholds"]["reliability"], color="#999999", ls="--", lw=0.8)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("agreement with everybody else")
    ax.set_ylabel("reliability within own latent group (EM)")
    ax.set_title("Reliability: a minority view is not noise")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    return fig


def _divisive(data: dict[str, Any]) -> Figure:
    rows = data["divisive"][:10]
    return _per_group_dots([[g["p_a"] for g in row["groups"]] for row in rows],
                           [f"pair {row['pair_id']}" for row in rows],
                           xlabel="P(first response preferred) per group", title="Most divisive pairs",
                           legend_loc="lower right")


def _per_group_dots(values: list[list[float | None]], labels: list[str], *, xlabel: str, title: str,
                    legend_loc: str) -> Figure:
    """One row per item: each group's value as a coloured dot on [0, 1], joined by a grey bar (None: no dot)."""
    fig, ax = _figure(6.0, 0.9 + 0.32 * max(len(values), 1))
    for y, row in enumerate(values):
        known = [v for v in row if v is not None]
        if known:
            ax.plot([min(known), max(known)], [y, y], color="#cccccc", lw=2, zorder=1)
        for g, value in enumerate(row):
            if value is not None:
                ax.scatter(value, y, color=COLOURS[g % len(COLOURS)], s=30, zorder=2,
                           label=f"group {g + 1}" if y == 0 else None)
    ax.set_yticks(range(len(values)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.axvline(0.5, color="#cccccc", lw=0.8, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    if values:
        ax.legend(fontsize=7, frameon=False, loc=legend_loc)
    return fig


def _times(data: dict[str, Any]) -> Figure:
    """Median seconds per judgment of each participant (log scale); outliers by robust z."""
    rows = sorted((p for p in data["participants"] if p["median_seconds"] is not None),
                  key=lambda p: p["median_seconds"])
    fig, ax = _figure(6.0, 2.8)
    kinds = (("too fast", "#d1495b"), ("slow", "#edae49"))
    normal = [p for p in rows if not any(f in p["flags"] for f, _ in kinds)]
    ax.scatter([max(p["median_seconds"], 0.05) for p in normal], [0.0] * len(normal), s=22, c="#1b6ca8",
               alpha=0.6, label="typical")
    for flag, colour in kinds:
        chosen = [p for p in rows if flag in p["flags"]]
        if chosen:
            ax.scatter([max(p["median_seconds"], 0.05) for p in chosen], [0.0] * len(chosen), s=40, c=colour,
                       label=flag, marker="D")
    ax.set_xscale("log")
    # Plain numbers: the default log labels are mathtext, which is off (text.parse_math above).
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks([])
    ax.spines[["left"]].set_visible(False)
    ax.set_ylim(-1, 1)
    ax.set_xlabel("median seconds per judgment (log scale)")
    ax.set_title(f"Time per judgment; outliers beyond robust z ±{data['thresholds']['time_z']}")
    if rows:
        ax.legend(fontsize=7, frameon=False, loc="upper left", ncol=3)
    return fig


def _bridging(data: dict[str, Any]) -> Figure:
    rows = data["bridging"][:10]
    return _per_group_dots([row["groups"] for row in rows], [f"response {row['response_id']}" for row in rows],
                           xlabel="mean win probability per group (bridging score: the lowest)",
                           title="Bridging responses", legend_loc="lower left")


def _ranking(data: dict[str, Any], prompt: dict[str, Any]) -> Figure:
    """One prompt's responses by Bradley-Terry log-strength, overall and per group, with CIs."""
    rows = prompt["responses"]
    series = [("everybody", "#444444", [(r["score"], r["low"], r["high"]) for r in rows])]
    if data["k"] > 1:
        series += [(f"group {g + 1}", COLOURS[g % len(COLOURS)],
                    [(r["groups"][g]["score"], r["groups"][g]["low"], r["groups"][g]["high"]) for r in rows])
                   for g in range(len(rows[0]["groups"]) if rows else 0)]
    fig, ax = _figure(6.0, 1.0 + 0.45 * max(len(rows), 1))
    offsets = [(i - (len(series) - 1) / 2) * 0.15 for i in range(len(series))]
    for (label, colour, values), offset in zip(series, offsets, strict=True):
        for y, (score, low, high) in enumerate(values):
            if score is None:
                continue
            low = score if low is None else low
            high = score if high is None else high
            ax.errorbar(score, y + offset, xerr=[[max(score - low, 0)], [max(high - score, 0)]], fmt="o",
                        color=colour, capsize=2, ms=4, label=label if y == 0 else None)
    ax.set_yticks(range(len(rows)), [_short(r["response"]) for r in rows])
    ax.invert_yaxis()
    ax.axvline(0, color="#cccccc", lw=0.8)
    ax.set_xlabel("Bradley-Terry log-strength, 95% bootstrap CI")
    ax.set_title(_short(prompt["prompt"], 70))
    ax.legend(fontsize=7, frameon=False, loc="best")
    return fig


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _group_sizes(data: dict[str, Any]) -> Figure:
    fig, ax = _figure(4.0, 2.6)
    groups = data["groups"]
    ax.bar([f"group {g['group'] + 1}" for g in groups], [g["size"] for g in groups],
           color=[COLOURS[g["group"] % len(COLOURS)] for g in groups])
    ax.set_ylabel("participants")
    ax.set_title("Group sizes")
    return fig


_DRAW: dict[str, Callable[[dict[str, Any]], Figure]] = {
    "map": _map, "agreement": _agreement, "reliability": _reliability, "times": _times, "divisive": _divisive,
    "bridging": _bridging, "group_sizes": _group_sizes,
}
