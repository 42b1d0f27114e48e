"""The demo's measurements and its report (``report.json`` for programs, ``report.md`` for people).

Accuracy uses the converter's protocol (``pocketrec evaluate``): each held-out user's history
before their leave-one-out test target is replayed event by event through a ``Recommender`` on
the bundle (demotion off), and the target is ranked against every catalog item not in that
history (HR, NDCG, Recall, Precision, coverage @ 5/10/20). The popularity baseline ranks the same
users' targets by the count of positive events in version 1's training data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pocketrec.core.dataset import Interactions
from pocketrec.core.events import negative_mask
from pocketrec.core.metrics import evaluate
from pocketrec.core.split import leave_one_out
from pocketrec.runtime import Recommender
from pocketrec.runtime.replay import replay_evaluate

REPORTED = ("hr@10", "ndcg@10", "recall@10", "precision@10", "coverage@10")
"""The metrics the report shows (all keys of ``pocketrec.core.metrics`` are in the JSON)."""


def bundle_accuracy(bundle: Path, heldout: Interactions) -> dict[str, float]:
    """Metrics of ``bundle`` on the held-out users' test targets, replayed on the device."""
    with Recommender.open(bundle, demotion=0.0) as rec:
        result = replay_evaluate(rec, heldout)
    return {**result.metrics, "users": float(result.users)}


def positive_counts(data: Interactions) -> dict[str, int]:
    """Item id -> number of positive (not dislike/dismiss) events in ``data``."""
    counts: dict[str, int] = {}
    for items, events in zip(data.sequences, data.events, strict=True):
        for item in items[~negative_mask(events)].tolist():
            item_id = data.items.id(item)
            counts[item_id] = counts.get(item_id, 0) + 1
    return counts


def popularity_accuracy(train: Interactions, heldout: Interactions) -> dict[str, float]:
    """Metrics of ranking by ``train``'s popularity on the held-out users (same protocol)."""
    counts = positive_counts(train)
    scores: npt.NDArray[np.float32] = np.asarray(
        [counts.get(item_id, 0) for item_id in heldout.items], dtype=np.float32
    )
    split = leave_one_out(heldout)
    return {**evaluate(split, lambda _u, _i, _e: scores), "users": float(split.num_users)}


def percentiles_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds and the number of calls."""
    if not values:
        return {"calls": 0.0}
    ms = np.asarray(values, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99]).tolist()
    return {"calls": float(len(ms)), "p50": p50, "p90": p90, "p99": p99, "max": float(ms.max())}


def all_finite(metrics: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in metrics.values())


def write_report(out: Path, report: dict[str, Any]) -> Path:
    """Write ``report.json`` and ``report.md`` into ``out``; returns the markdown's path."""
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    path = out / "report.md"
    path.write_text(render_markdown(report), encoding="utf-8")
    return path


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _accuracy_section(report: dict[str, Any]) -> list[str]:
    rows = [
        [name] + [f"{metrics[key]:.4f}" for key in REPORTED] + [f"{metrics['users']:.0f}"]
        for name, metrics in report["accuracy"].items()
    ]
    return [
        "## Accuracy on the held-out users",
        "",
        "Each held-out user's history before their last positive event is replayed event by "
        "event through `Recommender` (demotion off); that last event is ranked against the whole "
        "catalog minus the history (`pocketrec evaluate`'s protocol). Version 2 was trained on "
        f"{report['retraining']['data']}.",
        "",
        *_table(["model", *REPORTED, "users"], rows),
        "",
        "![metrics per version](metrics.png)",
        "",
    ]


def _latency_section(report: dict[str, Any]) -> list[str]:
    rows = [
        [kind]
        + [f"{stats.get(p, float('nan')):.3f}" for p in ("p50", "p90", "p99", "max")]
        + [f"{stats['calls']:.0f}"]
        for kind, stats in report["latency_ms"].items()
    ]
    return [
        "## Per-event latency on the devices (ms)",
        "",
        f"Interpreter `{report['device']['interpreter']}`, top-k backend "
        f"`{report['device']['backend']}`, store durability `full`; `sync` is a whole pass "
        "over loopback (upload and, when one is published, a bundle download).",
        "",
        *_table(["call", "p50", "p90", "p99", "max", "calls"], rows),
        "",
        "![latency histogram](latency.png)",
        "",
    ]


def _events_section(report: dict[str, Any]) -> list[str]:
    e = report["events"]
    rows = [[key.replace("_", " "), f"{value:,}"] for key, value in e.items()]
    return [
        "## Events",
        "",
        "Logged on the devices, dropped by a deliberately small outbox cap on one device, "
        "uploaded, and stored on the server; `resent` events reached the server twice (a reply "
        "lost on purpose) and were stored once.",
        "",
        *_table(["what", "count"], rows),
        "",
    ]


def _bundles_section(report: dict[str, Any]) -> list[str]:
    rows = [
        [name, f"{sizes['total']:,}", ", ".join(f"{k} {v:,}" for k, v in sizes["files"].items())]
        for name, sizes in report["bundles"].items()
    ]
    return ["## Bundle sizes (bytes)", "", *_table(["bundle", "total", "files"], rows), ""]


def _dismissal_section(report: dict[str, Any]) -> list[str]:
    d = report["dismissal"]
    rows = [
        [str(rank), before, after]
        for rank, (before, after) in enumerate(zip(d["before"], d["after"], strict=True), 1)
    ]
    return [
        "## One user's list before and after a dismissal",
        "",
        f"User `{d['user']}` on `{d['device']}` (version {d['model_version']}) dismisses "
        f"**{d['dismissed']}**: it is gone at once and similar items are demoted.",
        "",
        *_table(["rank", "before", "after"], rows),
        "",
        "![before and after a dismissal](dismissal.png)",
        "",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """The report as markdown (tables and the PNG plots next to it)."""
    setup = report["setup"]
    lines = [
        "# pocketrec demo report",
        "",
        f"Data: {setup['data']}; {setup['devices']} devices with {setup['heldout_users']} "
        f"held-out users; wall time {report['wall_seconds']:.1f} s.",
        "",
        *_accuracy_section(report),
        *_latency_section(report),
        *_events_section(report),
        *_bundles_section(report),
        *_dismissal_section(report),
        "## Steps",
        "",
        *[f"- {step}" for step in report["steps"]],
        "",
    ]
    return "\n".join(lines)
