"""The demo's PNG plots, drawn with matplotlib's ``Figure`` directly (no pyplot, no global state:
PNGs are rendered by the Agg canvas, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def latency_histogram(samples: dict[str, list[float]], path: Path) -> Path:
    """One histogram per call kind (milliseconds, log-spaced bins)."""
    fig = Figure(figsize=(4.2 * len(samples), 3.4))
    axes = fig.subplots(1, len(samples), squeeze=False)[0]
    for ax, (kind, values) in zip(axes, samples.items(), strict=True):
        ms = np.asarray(values, dtype=np.float64) * 1e3
        bins = np.geomspace(max(ms.min(), 1e-3), max(ms.max(), 2e-3), 40)
        ax.hist(ms, bins=bins, color="#3b7dd8")
        ax.set_xscale("log")
        p50, p99 = np.percentile(ms, [50, 99])
        for name, value, style in (("p50", p50, "-"), ("p99", p99, "--")):
            label = f"{name} {value:.2f} ms"
            ax.axvline(value, color="#c0392b", linestyle=style, linewidth=1, label=label)
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("milliseconds (log scale)")
        ax.set_ylabel("calls")
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle("per-call latency on the simulated devices")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def metrics_bars(accuracy: dict[str, dict[str, float]], keys: Sequence[str], path: Path) -> Path:
    """Grouped bars: one group per metric, one bar per model; the legend sits below the axes."""
    fig = Figure(figsize=(8.5, 4.6))
    ax = fig.subplots()
    width = 0.8 / max(len(accuracy), 1)
    x = np.arange(len(keys))
    for n, (name, metrics) in enumerate(accuracy.items()):
        values = [metrics[k] for k in keys]
        bars = ax.bar(x + (n - (len(accuracy) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=6, padding=1)
    ax.set_xticks(x, list(keys))
    ax.set_ylabel("metric value")
    top = max((m[k] for m in accuracy.values() for k in keys), default=1.0)
    ax.set_ylim(0, top * 1.12)  # room for the bar labels
    ax.set_title("accuracy on the held-out users per model version (as shipped)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def dismissal_lists(
    before: Sequence[str], after: Sequence[str], dismissed: str, title: str, path: Path
) -> Path:
    """Two ranked lists side by side: the dismissed item in red, new entries in green; a colour
    key below the lists."""
    rows = max(len(before), len(after))
    fig = Figure(figsize=(9.5, 0.42 * rows + 1.6))
    ax = fig.subplots()
    ax.set_axis_off()
    ax.set_xlim(0, 2)
    ax.set_ylim(rows + 1.6, -0.8)
    ax.text(0.02, -0.4, "before", fontweight="bold")
    ax.text(1.02, -0.4, f"after dismissing “{dismissed}”", fontweight="bold")
    for rank, item in enumerate(before, 1):
        color = "#c0392b" if item == dismissed else "black"
        ax.text(0.02, rank, f"{rank:>2}. {item}", color=color, family="monospace", fontsize=8)
    for rank, item in enumerate(after, 1):
        color = "black" if item in before else "#1e8449"
        ax.text(1.02, rank, f"{rank:>2}. {item}", color=color, family="monospace", fontsize=8)
    key = (
        ("#c0392b", "red: the dismissed item"),
        ("#1e8449", "green: new in the list after the dismissal"),
        ("black", "black: in both lists"),
    )
    for n, (color, text) in enumerate(key):
        ax.text(0.02 + 0.66 * n, rows + 1.2, f"■ {text}", color=color, fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
