"""``export-feedback``: the collected events as the CSV that ``pocketrec train`` reads."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from pocketrec.core.files import install_file
from pocketrec.server.storage import FeedbackStorage

HEADER = ("user", "item", "timestamp", "event")


def export_feedback(storage: FeedbackStorage, out: str | os.PathLike[str]) -> int:
    """Write every stored event to ``out`` (CSV ``user,item,timestamp,event``, one row per event
    in arrival order; the loader sorts each user's events by time). A user is
    ``<device_id>/<user_id>``: the same profile name on two devices is two people. Written to a
    temporary file and renamed, so ``out`` is complete or absent. Returns the number of rows."""
    target = Path(out)
    temp = target.with_name(f".{target.name}.tmp")
    rows = 0
    with temp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(HEADER)
        for event in storage.iter_events():
            user = f"{event.device_id}/{event.user_id}"
            writer.writerow((user, event.item_id, repr(event.timestamp), event.event_type))
            rows += 1
    install_file(temp, target)
    return rows
