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

PLOT_NAMES = ("map", "agreement", "reliability", "divisive", "group_sizes")
# A map coloured by a demographic attribute is named "map--<attribute key>".
ATTRIBUTE_MAP_PREFIX = "map--"
COLOURS = ["#1b6ca8", "#d1495b", "#2e933c", "#edae49", "#6b4c9a", "#00798c", "#8d6a9f", "#9c6644"]
# Figures are built with `Figure` directly, not pyplot: no global figure registry to leak in a
# long-running worker, no GUI backend, and a second faster to import.
matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "polyphony", "font.size": 9})


class UnknownPlot(Exception):
    pass


def plot_names(*, data: dict[str, Any]) -> list[str]:
    return [*PLOT_NAMES, *(ATTRIBUTE_MAP_PREFIX + key for key in data.get("attributes", {}))]


def plots_render_all(*, data: dict[str, Any]) -> dict[str, str]:
    """Every figure of a snapshot as an inline-ready SVG string (no XML prologue)."""
    return {name: plot_render(data=data, name=name, fmt="svg").decode() for name in plot_names(data=data)}


def plot_render(*, data: dict[str, Any], name: str, fmt: str) -> bytes:
    """One figure as SVG or PNG bytes; UnknownPlot for a name the snapshot has no figure for."""
    if name not in plot_names(data=data) or fmt not in ("svg", "png"):
        raise UnknownPlot(name)
    if name.startswith(ATTRIBUTE_MAP_PREFIX):
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
    fig, ax = _figure(5.5, 4.2)
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
    ax.set_xlabel(data["map_axes"][0])
    ax.set_ylabel(data["map_axes"][1])
    ax.set_title("Participants by latent group" if attribute is None else f"Participants by {attribute}")
    ax.legend(fontsize=7, frameon=False, loc="best")
    return fig


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
    ax.set_ylabel("agreement within own latent group")
    ax.set_title("Reliability: a minority view is not noise")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    return fig


def _divisive(data: dict[str, Any]) -> Figure:
    rows = data["divisive"][:10]
    fig, ax = _figure(6.0, 0.9 + 0.32 * max(len(rows), 1))
    for y, row in enumerate(rows):
        ps = [g["p_a"] for g in row["groups"]]
        ax.plot([min(ps), max(ps)], [y, y], color="#cccccc", lw=2, zorder=1)
        for g, p in enumerate(ps):
            ax.scatter(p, y, color=COLOURS[g % len(COLOURS)], s=30, zorder=2, label=f"group {g + 1}" if y == 0 else None)
    ax.set_yticks(range(len(rows)), [f"pair {r['pair_id']}" for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.axvline(0.5, color="#cccccc", lw=0.8, ls="--")
    ax.set_xlabel("P(first response preferred) per group")
    ax.set_title("Most divisive pairs")
    if rows:
        ax.legend(fontsize=7, frameon=False, loc="lower right")
    return fig


def _group_sizes(data: dict[str, Any]) -> Figure:
    fig, ax = _figure(4.0, 2.6)
    groups = data["groups"]
    ax.bar([f"group {g['group'] + 1}" for g in groups], [g["size"] for g in groups],
           color=[COLOURS[g["group"] % len(COLOURS)] for g in groups])
    ax.set_ylabel("participants")
    ax.set_title("Group sizes")
    return fig


_DRAW: dict[str, Callable[[dict[str, Any]], Figure]] = {
    "map": _map, "agreement": _agreement, "reliability": _reliability, "divisive": _divisive,
    "group_sizes": _group_sizes,
}
