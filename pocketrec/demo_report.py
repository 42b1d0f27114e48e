"""The demo's measurements and its report (``report.json`` for programs, ``report.md`` for people).

Accuracy uses the converter's protocol (``pocketrec evaluate``): each held-out user's history
before their leave-one-out test target is replayed event by event through a ``Recommender`` on
the bundle (demotion off), and the target is ranked against every catalog item not in that
history (HR, NDCG, Recall, Precision, coverage @ 5/10/20). A bundle is measured *as shipped*: a
target its catalog does not hold (an item released after it was trained) is a miss for every
per-user metric, so every version is averaged over the same users. The popularity baseline ranks
the same users' targets by the count of positive events in version 1's training data.
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
from pocketrec.core.heldout import HeldOut
from pocketrec.core.metrics import evaluate
from pocketrec.core.split import leave_one_out
from pocketrec.demo_data import DemoData, subset
from pocketrec.runtime import Recommender
from pocketrec.runtime.replay import replay_evaluate

REPORTED = ("hr@10", "ndcg@10", "recall@10", "precision@10", "coverage@10")
"""The metrics the report shows (all keys of ``pocketrec.core.metrics`` are in the JSON)."""
TOLD = ("hr@10", "ndcg@10")
"""The metrics the report's story (version 1 -> version 2) is told with."""
V1, V2 = "version 1, int8 catalog", "version 2, int8 catalog"
"""The accuracy rows compared: the bundles the devices served."""
LABELS = {"known": "an item version 1 was trained on", "new": "an item released after version 1"}
EVENT_COUNTS = {
    "logged": "events the devices logged (`observe`), the dismissal of step 5 included",
    "dropped_by_outbox_cap": "oldest events one device's deliberately small outbox dropped "
    "before they could be uploaded",
    "uploaded": "events the server acknowledged (each counted once on its device)",
    "stored_on_server": "events the server stores (each `event_id` once)",
    "resent_and_deduplicated": "of those, events sent again because a reply was lost on "
    "purpose: the server already had them and stored them once",
    "exported_for_version_2": "events exported to train version 2 (step 4)",
    "logged_after_export": "events logged after that export (step 5), uploaded by the last sync",
    "still_pending": "events never uploaded",
    "offline_sync_passes": "sync passes that found the server unreachable (network down)",
}
"""What each count of the report's events table is (the keys of ``report.json``'s events)."""


def bundle_accuracy(bundle: Path, heldout: Interactions) -> dict[str, float]:
    """Metrics of ``bundle`` as shipped on the held-out users' test targets, replayed on the
    device (module docstring): ``users`` counts every held-out user, ``not_in_catalog`` those
    whose target the bundle's catalog does not hold (misses); coverage is of its own catalog."""
    with Recommender.open(bundle, demotion=0.0) as rec:
        result = replay_evaluate(rec, heldout)
    users = result.users + result.skipped_users
    metrics = {
        key: value if key.startswith("coverage") else value * result.users / users
        for key, value in result.metrics.items()
    }
    return {**metrics, "users": float(users), "not_in_catalog": float(result.skipped_users)}


def accuracy_by_target(v1: Path, v2: Path, data: DemoData) -> dict[str, dict[str, Any]]:
    """HR@10 / NDCG@10 of bundles ``v1`` and ``v2`` (as shipped) on the held-out users whose test
    target version 1's training data holds (``"known"``) and on those whose target it never saw
    (``"new"``: released after it, so not in ``v1``'s catalog: a miss for every such user).
    Groups without users are left out."""
    known = set(data.train.items.ids)
    split = leave_one_out(data.heldout)
    targets = HeldOut.from_split(split).stage("test").targets.tolist()
    groups: dict[str, list[str]] = {"known": [], "new": []}
    for user, target in zip(split.users.tolist(), targets, strict=True):
        group = "known" if data.heldout.items.id(target) in known else "new"
        groups[group].append(data.heldout.users.id(user))
    out: dict[str, dict[str, Any]] = {}
    for group, users in groups.items():
        if not users:
            continue
        part = subset(data.heldout, users, f"held-out users, {group} targets")
        first = bundle_accuracy(v1, part) if group == "known" else dict.fromkeys(TOLD, 0.0)
        second = bundle_accuracy(v2, part)
        out[group] = {"users": len(users), **{
            name: {k: m[k] for k in TOLD} for name, m in (("1", first), ("2", second))
        }}  # fmt: skip
    return out


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
        "catalog minus the history (`pocketrec evaluate`'s protocol). Each bundle is measured as "
        "shipped: a target its catalog does not hold counts as a miss, so every row averages "
        "over the same users. Version 2 was trained on "
        f"{report['retraining']['data']}.",
        "",
        *_table(["model", *REPORTED, "users"], rows),
        "",
        *_story(report),
        "![metrics per version](metrics.png)",
        "",
    ]


def _change(report: dict[str, Any], key: str) -> str:
    a = report["accuracy"]
    before, after = a[V1][key], a[V2][key]
    return f"{key.upper()} {before:.4f} → {after:.4f} ({after - before:+.4f})"


def _story(report: dict[str, Any]) -> list[str]:
    """Why version 2 beats version 1 (or does not), from the accuracy by test target."""
    groups = report["by_target"]
    users = report["accuracy"][V2]["users"]
    lines = [
        f"**Version 1 → version 2** (int8 catalogs, the same {users:.0f} users): "
        + ", ".join(_change(report, key) for key in TOLD)
        + ".",
        "",
    ]
    new = groups.get("new")
    if new is not None:
        setup = report["setup"]
        lines += [
            (
                f"Why: after version 1 shipped, {setup['new_items']} new items were released "
                "(their titles end in “(new)”) and the devices' users chose them. "
                if setup["release"]
                else f"Why: {setup['new_items']} items the devices' users chose are not in "
                "version 1's training data. "
            )
            + f"{new['users']} of the {users:.0f} held-out users ({new['users'] / users:.0%}) "
            "have such an item as their test target. Version 1's catalog does not hold those "
            "items, so it misses every one of them; version 2 was trained on the feedback the "
            "devices uploaded, which holds them, so it can rank them.",
            "",
        ]
        known = groups.get("known")
        if known is not None and known["2"]["hr@10"] < known["1"]["hr@10"]:
            lines += [
                "On targets version 1 knew, version 2 is a little lower: it ranks the new "
                "items too, and they compete with the older items for the same ten places.",
                "",
            ]
    else:
        lines += [
            "No held-out user's test target is an item version 1 never saw: the difference "
            "comes from training on the devices' feedback alone.",
            "",
        ]
    rows = [
        [LABELS[group], str(g["users"])] + [f"{g[v][key]:.4f}" for key in TOLD for v in ("1", "2")]
        for group, g in groups.items()
    ]
    header = ["test target", "users"] + [f"{k} v{v}" for k in TOLD for v in ("1", "2")]
    return [*lines, *_table(header, rows), ""]


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
    rows = [[key.replace("_", " "), f"{e[key]:,}", EVENT_COUNTS[key]] for key in e]
    return [
        "## Events",
        "",
        "Every event a device logged is either dropped by the capped outbox or uploaded and "
        f"stored once: {e['logged']:,} logged - {e['dropped_by_outbox_cap']:,} dropped = "
        f"{e['stored_on_server']:,} stored. Of those, {e['exported_for_version_2']:,} were "
        f"exported to train version 2 (step 4); the other {e['logged_after_export']:,} (the "
        "dismissal of step 5) were logged after that export and uploaded by the last sync.",
        "",
        *_table(["what", "count", "meaning"], rows),
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
        f"**{d['dismissed']}**: it is gone at once and for good; the other items keep their "
        "order (demoting similar items is off by default: on MovieLens 100K's dislikes every "
        "strength tried lowered NDCG@10, see the README).",
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
        *report["steps"],  # "1. ..." to "5. ...": a numbered list
        "",
        *[
            f"Version {v} trained {t['epochs']} epochs in {t['seconds']:.1f} s and kept epoch "
            f"{t['best_epoch']} (best validation NDCG@10); "
            + ("early stopping ended training." if t["stopped_early"] else "the cap ended it.")
            for v, t in report["training"].items()
        ],
        "",
    ]
    return "\n".join(lines)
