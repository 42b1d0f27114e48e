"""What every part of pocketrec shares: errors, ids and schemas, data, metrics, reference maths."""

from pocketrec.core.dataset import Interactions, InteractionsBuilder, LoadReport
from pocketrec.core.errors import (
    BackendUnavailableError,
    DataFormatError,
    KernelError,
    PocketrecError,
)
from pocketrec.core.events import EVENT_NAMES, NEGATIVE_EVENTS, EventType, event_code
from pocketrec.core.idmap import IdMap, UnknownIdError
from pocketrec.core.loaders import FORMATS, detect_format, load, write_csv
from pocketrec.core.metrics import (
    MetricAccumulator,
    evaluate,
    evaluate_ranks,
    popularity_baseline,
    rank_of_target,
    topk_items,
)
from pocketrec.core.split import Split, leave_one_out

__all__ = [
    "EVENT_NAMES",
    "FORMATS",
    "NEGATIVE_EVENTS",
    "BackendUnavailableError",
    "DataFormatError",
    "EventType",
    "IdMap",
    "Interactions",
    "InteractionsBuilder",
    "KernelError",
    "LoadReport",
    "MetricAccumulator",
    "PocketrecError",
    "Split",
    "UnknownIdError",
    "detect_format",
    "evaluate",
    "evaluate_ranks",
    "event_code",
    "leave_one_out",
    "load",
    "popularity_baseline",
    "rank_of_target",
    "topk_items",
    "write_csv",
]
