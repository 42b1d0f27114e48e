"""The ``pocketrec`` command line.

Commands:
  pocketrec demo       the whole loop offline: train, serve, devices sync, retrain, report
  pocketrec backends   list the top-k backends usable on this machine and the C code path
  pocketrec train      train the interest model on a dataset (needs the `convert` extra)
  pocketrec convert    export a trained model to a verified on-device bundle
  pocketrec inspect    verify a bundle and print its manifest
  pocketrec evaluate   replay held-out users event by event through the on-device Recommender
  pocketrec serve      run the reference sync server (needs the `server` extra)
  pocketrec device     add (print a new token), revoke or list the sync server's devices
  pocketrec keygen     write an Ed25519 key pair for signing bundles
  pocketrec publish    sign a bundle's manifest and make it the server's latest bundle
  pocketrec export-feedback  write the server's collected events (CSV or Parquet) for `train`
  pocketrec admin-token      write a token for the server's admin routes
  pocketrec data       data requests: export or erase one device's (or user's) events
  pocketrec retention  drop the server's events older than N days

TensorFlow is imported only by `train`, `convert` and `demo`; the server's packages only by the
server commands. A command whose extra is not installed says which one before it starts
(:data:`_NEEDS`); arguments are checked before the heavy imports. Every error is one line on
stderr and exit code 2. Third-party log lines are hidden unless ``--verbose``
(``pocketrec.core.third_party_logs``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pocketrec import __version__
from pocketrec.converter.config import BATCHING, CELLS, ModelConfig
from pocketrec.core.bundle import CATALOG_DTYPES, MODEL_DTYPES
from pocketrec.core.errors import PocketrecError
from pocketrec.core.loaders import FORMATS
from pocketrec.core.optional import missing_dependency, require
from pocketrec.core.third_party_logs import VERBOSE_ENV, import_tensorflow, quiet_tensorflow
from pocketrec.native import backends, registry
from pocketrec.runtime.feedback import DEFAULT_DEMOTION

if TYPE_CHECKING:
    from pocketrec.converter.pipeline import ExportResult

_SERVER_MODULES = ("starlette", "uvicorn", "prometheus_client")
_NEEDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "demo": ("demo", ("tensorflow", *_SERVER_MODULES, "matplotlib")),
    "train": ("convert", ("tensorflow",)),
    "convert": ("convert", ("tensorflow",)),
    "serve": ("server", _SERVER_MODULES),
}
"""command -> (the pip extra, the top-level modules it needs beyond the base install)."""


def _existing(path: Path, flag: str, *, folder: bool | None = None) -> Path:
    """``path`` when it exists (a folder when ``folder``, a file when ``folder is False``);
    otherwise ``FileNotFoundError`` or ``ValueError`` naming ``flag``."""
    if not path.exists():
        raise FileNotFoundError(f"{flag} {path}: no such file or folder")
    if folder and not path.is_dir():
        raise ValueError(f"{flag} {path}: is a file, expected a folder")
    if folder is False and path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder, expected a file")
    return path


def _writable_out(out: Path, force: bool) -> None:
    """Refuse an output folder that exists as a file, or is not empty unless ``force``."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out}: exists and is a file, expected a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FileExistsError(
            f"--out {out}: the folder is not empty; pass --force to write into it, or choose "
            "another --out"
        )


def _cmd_backends(_args: argparse.Namespace) -> int:
    names = backends()
    print(f"available: {', '.join(names)} (auto picks {registry.resolve('auto')})")
    if "c" in names:
        from pocketrec.native import c_backend

        print(f"C code paths on this CPU: {', '.join(c_backend.available_isas())}")
        used = ", ".join(f"{kind} {how}" for kind, how in c_backend.isa_report().items())
        print(f"C code path used: {used}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.devices < 1 or (args.users is not None and args.users < 10):
        raise ValueError("need --devices >= 1 and --users >= 10")
    import_tensorflow()
    from pocketrec.demo import DemoOptions, run_demo

    options = DemoOptions(
        out=args.out, data=args.data, users=args.users, devices=args.devices, fast=args.fast,
        force=args.force, seed=args.seed,
    )  # fmt: skip
    path = run_demo(options)
    print(f"report: {path.resolve()}")
    return 0


def _print_metrics(label: str, metrics: dict[str, float], ks: Sequence[int] = (5, 10, 20)) -> None:
    keys = [f"{m}@{k}" for k in ks for m in ("hr", "ndcg")] + ["coverage@10", "mrr"]
    print(f"{label}: " + "  ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics))


def _cmd_train(args: argparse.Namespace) -> int:
    from pocketrec.core import leave_one_out, load

    _existing(args.data, "--data")
    _writable_out(args.out, args.force)
    fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"num_items"}
    settings = {name: value for name, value in vars(args).items() if name in fields}
    ModelConfig(num_items=1, **settings)  # its checks, before the data and TensorFlow load
    data, report = load(args.data, format=args.format)
    if report.total_skipped:
        print(report.summary(), file=sys.stderr)
    split = leave_one_out(data)
    print(data.summary())
    print(split.summary())
    import_tensorflow()
    from pocketrec.converter import model_dir
    from pocketrec.converter.training import train
    from pocketrec.core.metrics import popularity_baseline

    config = ModelConfig(num_items=data.num_items, **settings)
    model, result = train(split, config, loss=args.loss, num_sampled=args.num_sampled)
    model_dir.save(args.out, model, data, split, result)
    _print_metrics(f"best validation (epoch {result.best_epoch})", result.best_valid)
    _print_metrics("popularity baseline (validation)", popularity_baseline(split, stage="valid"))
    print(
        f"{result.epochs_run} epochs of {result.batches_per_epoch} batches (batch size "
        f"{result.batch_size}, windows of {result.window} events"
        f"{', history masked' if result.mask_history else ''}), validated every "
        f"{result.valid_every} epoch(s)"
    )
    if result.refit_epochs:
        print(
            f"refit: {result.refit_epochs} epochs on the training events and the validation "
            f"targets ({result.refit_seconds:.1f} s); the model kept is the refit one"
        )
    print(f"training wall time: {result.seconds:.1f} s; model written to {args.out}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    if (args.model_dir is None) == (args.saved_model is None):
        raise ValueError("give a model directory or --saved-model DIR (one of them)")
    if args.saved_model is not None:
        _existing(args.saved_model, "--saved-model", folder=True)
        if args.catalog is None or args.items is None:
            raise ValueError("--saved-model needs --catalog CATALOG.npy and --items ITEMS.json")
        _existing(args.catalog, "--catalog", folder=False)
        _existing(args.items, "--items", folder=False)
    else:
        _existing(args.model_dir, "MODEL_DIR", folder=True)
    _writable_out(args.out, args.force)
    import_tensorflow()
    if args.saved_model is not None:
        result = _convert_saved_model(args)
    else:
        from pocketrec.converter.pipeline import export_bundle

        result = export_bundle(
            args.model_dir,
            args.out,
            model_dtype=args.model_dtype,
            catalog_dtype=args.catalog_dtype,
            model_version=args.model_version,
            overwrite=args.force,
        )
    m = result.manifest
    print(
        f"bundle {result.path}: model version {m.model_version}, {m.num_items} items, "
        f"model {m.model_dtype}, catalog {m.catalog_dtype}"
    )
    print("parity vs Keras: " + ", ".join(f"{k}={v:.3g}" for k, v in result.parity.items()))
    for name, size in result.sizes.items():
        print(f"  {name:<26} {size:>12,} bytes")
    for stage in ("valid", "test"):
        if stage in m.metrics:
            _print_metrics(f"bundle as shipped, {stage}", m.metrics[stage])
    return 0


def _convert_saved_model(args: argparse.Namespace) -> ExportResult:
    """``convert --saved-model``: anyone's step model with its catalog and item ids."""
    import numpy as np

    from pocketrec.converter import export
    from pocketrec.core import load
    from pocketrec.core.events import EVENT_NAMES

    item_ids = json.loads(args.items.read_text(encoding="utf-8"))
    titles = None if args.titles is None else json.loads(args.titles.read_text(encoding="utf-8"))
    validation = None if args.data is None else load(args.data, format=args.format)[0]
    return export(
        args.saved_model,
        catalog=np.load(args.catalog, allow_pickle=False),
        item_ids=item_ids,
        out=args.out,
        initial_state=None if args.initial_state is None else np.load(args.initial_state),
        initial_user=None if args.initial_user is None else np.load(args.initial_user),
        event_types=EVENT_NAMES[: args.event_types],
        validation=validation,
        titles=titles,
        catalog_dtype=args.catalog_dtype,
        model_dtype=args.model_dtype,
        model_version=args.model_version,
        overwrite=args.force,
    )


def _cmd_inspect(args: argparse.Namespace) -> int:
    from pocketrec.core.bundle import verify_bundle

    manifest = verify_bundle(args.bundle_dir)
    if args.json:
        print(manifest.to_json())
        return 0
    print(f"{args.bundle_dir}: OK (every file's length and SHA-256 verified)")
    print(f"model version {manifest.model_version}, created {manifest.created_at}")
    print(
        f"items {manifest.num_items}, user dim {manifest.user_dim}, state dim "
        f"{manifest.state_dim}, model {manifest.model_dtype}, catalog {manifest.catalog_dtype}"
    )
    for name, entry in manifest.files.items():
        print(f"  {name:<26} {entry.bytes:>12,} bytes  sha256 {entry.sha256[:16]}…")
    for stage in ("valid", "test"):
        if stage in manifest.metrics:
            _print_metrics(stage, manifest.metrics[stage])
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pocketrec.core import load
    from pocketrec.core.bundle import read_manifest
    from pocketrec.core.metrics import DEFAULT_KS
    from pocketrec.runtime import Recommender
    from pocketrec.runtime.replay import replay_evaluate

    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    _existing(args.data, "--data")
    rec = Recommender.open(args.bundle_dir, backend=args.backend, demotion=args.demotion)
    data, report = load(args.data, format=args.format)
    if report.total_skipped:
        print(report.summary(), file=sys.stderr)
    ks = sorted({*DEFAULT_KS, args.k})
    refit = read_manifest(args.bundle_dir).metrics.get("training", {}).get("refit_epochs", 0)
    if args.stage == "valid" and refit:
        print(
            f"warning: this bundle's model was trained again ({refit} epochs) on the validation "
            "targets: validation metrics are not held out (use --stage test)",
            file=sys.stderr,
        )
    result = replay_evaluate(rec, data, ks=ks, stage=args.stage)
    _warn_partial_match(result)
    if args.json:
        out = {**result.metrics, "users": result.users, "model_version": result.model_version}
        print(json.dumps(out, sort_keys=True))
        return 0
    info = rec.info()
    print(
        f"replayed {result.users:,} {args.stage} users ({result.events:,} events, "
        f"{result.unknown_events:,} on items not in the catalog) through Recommender in "
        f"{result.seconds:.1f} s: bundle version {result.model_version}, catalog "
        f"{info['catalog_dtype']}, interpreter {info['interpreter']}, backend {info['backend']}, "
        f"demotion {args.demotion:g}"
    )
    _print_metrics(f"replayed, {args.stage}", result.metrics, ks)
    offline = read_manifest(args.bundle_dir).metrics.get(args.stage, {})
    common = [key for key in result.metrics if key in offline]
    if common:
        diff = max(abs(result.metrics[key] - float(offline[key])) for key in common)
        verdict = "equal within 1e-6" if diff <= 1e-6 else "DIFFERENT (other data or demotion?)"
        print(
            f"the bundle's offline {args.stage} metrics (converter): {verdict}, "
            f"max |diff| {diff:.2g}"
        )
    return 0


def _warn_partial_match(result: Any) -> None:
    """On stderr: how many held-out users ``pocketrec evaluate`` skipped and how many history
    events it could not use, because the data holds items the bundle's catalog does not."""
    held = result.users + result.skipped_users
    if result.skipped_users:
        print(
            f"warning: {result.skipped_users:,} of {held:,} held-out users skipped "
            f"({result.skipped_users / held:.0%}): their held-out item is not in the bundle's "
            "catalog (data other than the bundle was trained on?); metrics are over the other "
            f"{result.users:,}",
            file=sys.stderr,
        )
    if result.unknown_events:
        print(
            f"warning: {result.unknown_events:,} of {result.events:,} history events "
            f"({result.unknown_events / max(result.events, 1):.0%}) are on items not in the "
            "bundle's catalog: they left the user vectors unchanged",
            file=sys.stderr,
        )


def _cmd_serve(args: argparse.Namespace) -> int:
    from pocketrec.server.ratelimit import RateLimit
    from pocketrec.server.running import ServerOptions, serve
    from pocketrec.server.transport import TransportLimits

    options = ServerOptions(
        limits=TransportLimits(
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            keep_alive_timeout=args.keep_alive_timeout,
            max_connections=args.max_connections,
        ),
        rate_limit=None if args.rate_limit is None else RateLimit.parse(args.rate_limit),
        graceful_timeout=args.graceful_timeout,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        access_log=args.access_log,
        admin_token_file=args.admin_token_file,
        retention_days=args.retention_days,
        auth_cache_seconds=args.auth_cache_seconds,
    )
    serve(
        args.db, args.bundles, host=args.host, port=args.port, workers=args.workers,
        options=options,
    )  # fmt: skip
    return 0


def _cmd_device(args: argparse.Namespace) -> int:
    from pocketrec.server.storage import open_storage

    storage = open_storage(args.db)
    try:
        if args.action == "list":
            for device in storage.devices():
                state = "revoked" if device.revoked else "active"
                print(f"{device.device_id}\t{state}\tadded {_utc(device.created_at)}")
            return 0
        if args.action == "add":
            print(storage.add_device(args.device_id))
            print(
                f"device {args.device_id!r}: the token above is shown once; the server keeps "
                "only its SHA-256",
                file=sys.stderr,
            )
            return 0
        if not storage.revoke_device(args.device_id):
            raise ValueError(f"no device {args.device_id!r} in {args.db}")
        print(f"device {args.device_id!r} revoked: its token now gets 401")
        return 0
    finally:
        storage.close()


def _cmd_admin_token(args: argparse.Namespace) -> int:
    from pocketrec.server.admin import write_new_token

    write_new_token(args.out)
    print(f"admin token written to {args.out} (mode 0600); serve with --admin-token-file")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from pocketrec.server import data_requests
    from pocketrec.server.storage import open_storage

    storage = open_storage(args.db)
    try:
        whose = f"device {args.device!r}" + (f", user {args.user!r}" if args.user else "")
        if args.action == "export":
            count = data_requests.export_to_file(storage, args.device, args.out, args.user)
            print(f"wrote {count} events of {whose} to {args.out} (JSON lines)")
        else:
            count = data_requests.erase(storage, args.device, args.user)
            print(f"erased {count} events of {whose}")
    finally:
        storage.close()
    return 0


def _cmd_retention(args: argparse.Namespace) -> int:
    from pocketrec.server import data_requests
    from pocketrec.server.storage import open_storage

    storage = open_storage(args.db)
    try:
        done = data_requests.apply_retention(storage, args.days)
    finally:
        storage.close()
    print(
        f"dropped {done.events} events received more than {args.days:g} days ago "
        f"({done.partitions} of them in whole partitions)"
    )
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from pocketrec.server.signing import generate_key

    public = generate_key(args.out)
    print(public)
    print(f"private key: {args.out} (keep it secret); public key: {args.out}.pub", file=sys.stderr)
    return 0


def _utc(seconds: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _cmd_publish(args: argparse.Namespace) -> int:
    from pocketrec.server.bundles import BundleRepository
    from pocketrec.server.signing import load_private_key, public_key_hex
    from pocketrec.server.storage import open_storage

    key = load_private_key(args.key)
    storage = open_storage(args.db)
    try:
        published = BundleRepository(args.server_dir, storage).publish(args.bundle_dir, key)
    finally:
        storage.close()
    print(
        f"published model version {published.model_version} as the latest bundle in "
        f"{args.server_dir} (public key {public_key_hex(key)})"
    )
    return 0


def _cmd_export_feedback(args: argparse.Namespace) -> int:
    from pocketrec.server.export import export_feedback, use_lean_allocators

    use_lean_allocators()  # before pyarrow is imported
    from pocketrec.server.storage import open_storage

    storage = open_storage(args.db)
    try:
        rows = export_feedback(storage, args.out, format=args.format)
    finally:
        storage.close()
    what = {
        "csv": "CSV user,item,timestamp,event",
        "parquet": "Parquet, partitioned by day=YYYY-MM-DD",
    }
    print(f"wrote {rows} events to {args.out} ({what[args.format]})")
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default; an option whose default is ``None`` says in its
    own help what happens without it, and a flag (``store_true``) is off unless given."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


_COMMON = argparse.ArgumentParser(add_help=False)
_COMMON.add_argument(
    "--verbose",
    action="store_true",
    help="show the third-party log lines hidden by default (TensorFlow's C++ INFO and WARNING "
    "lines such as oneDNN and cpu_feature_guard, LiteRT's XNNPACK delegate notice)",
)


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str
) -> argparse.ArgumentParser:
    """A sub-command: ``summary`` is its line in ``pocketrec --help`` and its description."""
    return sub.add_parser(
        name, help=summary, description=summary, formatter_class=_HelpFormatter, parents=[_COMMON]
    )


_MODEL_HELP = {
    "embedding_dim": "item embedding size E",
    "hidden_dim": "state size: the GRU's H, or the complex state N of each LRU block",
    "user_dim": "user and catalog vector size D (before the folded bias)",
    "dropout": "dropout on the event inputs while training",
    "max_len": "events per training window",
    "max_window": "longest training window: max_len doubles while its windows hold under 0.9 "
    "of the training positions (<= max_len: off)",
    "batch_size": "users per batch at most (events per batch: this * the mean window length)",
    "min_batches": "batches per epoch at least: smaller batches on small data (0: off)",
    "valid_every": "epochs between validation passes (0: from history lengths)",
    "learning_rate": "Adam's learning rate",
    "max_epochs": "epochs at most",
    "patience": "stop after this many epochs without a validation NDCG@10 gain",
    "seed": "random seed",
    "num_layers": "LRU blocks (0: the cell's default, 2 LRU blocks or 1 GRU layer)",
    "r_min": "smallest initial |lambda| of the LRU",
    "weight_decay": "AdamW weight decay (0: plain Adam)",
    "plateau_decay": "multiply the learning rate by this after an epoch without gain (1: off)",
    "init_std": "std of the truncated-normal initial weights (0: Keras' initializers)",
    "ema": "momentum of the weights' moving average that is evaluated and kept (0: off)",
    "label_smoothing": "share of the full-softmax target spread evenly over all items (0: off)",
    "history_mask_share": "leave the items a position has read out of its softmax when the mean "
    "training window holds at least this share of the catalog (0: always, >= 1: never)",
    "refit_share": "after early stopping, train again for the best epoch count on the training "
    "events plus the validation targets when these add at least this share of the positions "
    "(0: always, >= 1: never)",
    "cosine_temperature": "score by the cosine of user and item embeddings divided by this, plus "
    "the item bias (0: the raw inner product)",
}


def _add_model_options(tr: argparse.ArgumentParser) -> None:
    """One option per :class:`ModelConfig` field, its default the config's own."""
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    for name, text in _MODEL_HELP.items():
        flag = "--" + name.replace("_", "-")
        tr.add_argument(flag, type=type(defaults[name]), default=defaults[name], help=text)
    tr.add_argument("--cell", choices=CELLS, default=defaults["cell"], help="recurrent cell")
    tr.add_argument(
        "--batching",
        choices=BATCHING,
        default=defaults["batching"],
        help="size batches by training events (each event weighs the same) or by users",
    )
    tr.add_argument(
        "--tied",
        action=argparse.BooleanOptionalAction,
        default=defaults["tied"],
        help="catalog vectors = input item embeddings (needs --user-dim == --embedding-dim)",
    )


_FORMATS = ("auto", *FORMATS)
_FORMAT_HELP = "dataset format (auto: guessed from the file)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pocketrec`` command (one sub-parser per command)."""
    parser = argparse.ArgumentParser(
        prog="pocketrec",
        description="pocketrec: an embedded, on-device recommender (train, convert, run, sync)",
        epilog="Each command has --help. Errors are one line on stderr, exit code 2.",
    )
    parser.add_argument("--version", action="version", version=f"pocketrec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = _command(
        sub, "demo", "the whole loop offline: train, serve, devices, retrain, report (extra: demo)"
    )
    demo.add_argument("--out", type=Path, default=Path("pocketrec-demo"), help="output folder")
    demo.add_argument(
        "--data", type=Path, default=None, help="a dataset file or folder (default: synthetic)"
    )
    demo.add_argument(
        "--users", type=int, default=None, help="synthetic users (default: 3000; 1000 with --fast)"
    )
    demo.add_argument("--devices", type=int, default=4, help="simulated devices")
    demo.add_argument("--fast", action="store_true", help="a small model and data (tests)")
    demo.add_argument("--force", action="store_true", help="empty a non-empty --out first")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.set_defaults(func=_cmd_demo)

    info = _command(sub, "backends", "list the top-k backends usable on this machine")
    info.set_defaults(func=_cmd_backends)

    tr = _command(sub, "train", "train the interest model on a dataset (extra: convert)")
    tr.add_argument("--data", required=True, type=Path, help="dataset file or folder")
    tr.add_argument("--format", choices=_FORMATS, default="auto", help=_FORMAT_HELP)
    tr.add_argument("--out", required=True, type=Path, help="model folder to write")
    tr.add_argument("--force", action="store_true", help="write into a non-empty --out")
    tr.add_argument(
        "--loss",
        choices=("full", "sampled"),
        default="full",
        help="softmax over the whole catalog, or over sampled negatives",
    )
    tr.add_argument("--num-sampled", type=int, default=1000, help="negatives for --loss sampled")
    _add_model_options(tr)
    tr.set_defaults(func=_cmd_train)

    cv = _command(sub, "convert", "export a trained model to an on-device bundle (extra: convert)")
    cv.add_argument(
        "model_dir", type=Path, nargs="?", help="model folder written by pocketrec train"
    )
    byom = cv.add_argument_group("bring your own model (see the README)")
    byom.add_argument(
        "--saved-model",
        type=Path,
        help="a SavedModel with a step signature (default: none, MODEL_DIR is converted)",
    )
    byom.add_argument(
        "--catalog",
        type=Path,
        help=".npy float32 [N, D], a row per item (default: none; needed with --saved-model)",
    )
    byom.add_argument(
        "--items",
        type=Path,
        help="JSON list of the N item ids in row order (default: none; needed with --saved-model)",
    )
    byom.add_argument("--titles", type=Path, help="JSON list of N titles (default: none)")
    byom.add_argument("--initial-state", type=Path, help=".npy [H] (default: zeros)")
    byom.add_argument("--initial-user", type=Path, help=".npy [D] (default: zeros)")
    byom.add_argument("--event-types", type=int, default=6, help="event codes the model takes")
    byom.add_argument(
        "--data", type=Path, help="dataset for the parity gate and metrics (default: random)"
    )
    byom.add_argument("--format", choices=_FORMATS, default="auto", help=_FORMAT_HELP)
    cv.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    cv.add_argument(
        "--model-dtype",
        choices=MODEL_DTYPES,
        default="float32",
        help="weights of the step model (step.tflite): float32; float16 (stored in half "
        "precision, about half the file, computed in float32); int8 (dynamic-range quantized, "
        "about a quarter of the file; user vectors differ slightly, the parity gate says by how "
        "much)",
    )
    cv.add_argument(
        "--catalog-dtype",
        choices=CATALOG_DTYPES,
        default="float32",
        help="the catalog vectors: float32, or int8 codes with one float32 scale per item "
        "(about a quarter of the size; ranked by the int8 kernels)",
    )
    cv.add_argument(
        "--model-version", type=int, default=None, help="version number (default: Unix time)"
    )
    cv.add_argument("--force", action="store_true", help="replace an existing bundle")
    cv.set_defaults(func=_cmd_convert)

    ins = _command(sub, "inspect", "verify a bundle and print its manifest")
    ins.add_argument("bundle_dir", type=Path, help="bundle folder")
    ins.add_argument("--json", action="store_true", help="print the manifest as JSON")
    ins.set_defaults(func=_cmd_inspect)

    ev = _command(
        sub, "evaluate", "replay held-out users event by event through the on-device Recommender"
    )
    ev.add_argument("bundle_dir", type=Path, help="bundle folder")
    ev.add_argument("--data", required=True, type=Path, help="dataset file or folder")
    ev.add_argument("--format", choices=_FORMATS, default="auto", help=_FORMAT_HELP)
    ev.add_argument("--k", type=int, default=10, help="cut-off reported besides 5, 10 and 20")
    ev.add_argument(
        "--demotion",
        type=float,
        default=0.0,
        help="negative-feedback demotion lambda (0: the converter's offline protocol; the "
        f"device default is {DEFAULT_DEMOTION:g})",
    )
    ev.add_argument(
        "--stage",
        choices=("test", "valid"),
        default="test",
        help="held-out target to rank: test, or valid (for choosing settings)",
    )
    ev.add_argument(
        "--backend", choices=("auto", *registry.NAMES), default="auto", help="top-k backend"
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=_cmd_evaluate)
    _add_server_commands(sub)
    return parser


def _add_server_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The sync server's commands (their imports happen only when they run)."""
    srv = _command(sub, "serve", "run the reference sync server (extra: server)")
    _add_db(srv)
    srv.add_argument(
        "--bundles",
        required=True,
        type=Path,
        help="published bundles folder (publish's --server-dir)",
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on")
    srv.add_argument("--port", type=int, default=8080, help="port to listen on")
    srv.add_argument(
        "--workers", type=int, default=1,
        help="worker processes on one socket (more than 1 needs a postgresql:// --db)",
    )  # fmt: skip
    for flag, kind, default, text in (
        ("header-timeout", float, 10.0, "seconds for a request's headers to arrive"),
        ("body-timeout", float, 60.0, "seconds for a request's body to arrive"),
        ("keep-alive-timeout", int, 5, "seconds an idle connection is kept between requests"),
        ("max-connections", int, 1000, "open connections per worker; more get 503"),
        ("graceful-timeout", float, 20.0, "seconds a shutdown waits for requests in flight"),
        (
            "auth-cache-seconds",
            float,
            5.0,
            "seconds a worker trusts a device token it checked: a revocation takes effect within "
            "this (0: every request asks the database)",
        ),
    ):
        srv.add_argument(f"--{flag}", type=kind, default=default, help=text)
    srv.add_argument(
        "--rate-limit",
        metavar="RATE/BURST",
        default=None,
        help="per-device limit: RATE requests/s, bursts of BURST (e.g. 5/20); 429 beyond "
        "(default: no limit)",
    )
    srv.add_argument(
        "--ssl-certfile", default=None, help="serve HTTPS: PEM certificate chain (default: HTTP)"
    )
    srv.add_argument(
        "--ssl-keyfile", default=None, help="serve HTTPS: PEM private key (default: HTTP)"
    )
    srv.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one JSON line per request on stdout",
    )
    srv.add_argument(
        "--admin-token-file",
        default=None,
        help="the operator's token (from pocketrec admin-token) for the admin routes (default: "
        "none, the admin routes answer 401)",
    )
    srv.add_argument(
        "--retention-days",
        type=float,
        default=None,
        help="drop events received more than this many days ago, at start and then daily "
        "(default: keep them)",
    )
    srv.set_defaults(func=_cmd_serve)

    adm = _command(sub, "admin-token", "write a new token for the server's admin routes")
    adm.add_argument("--out", required=True, type=Path, help="file to create (mode 0600)")
    adm.set_defaults(func=_cmd_admin_token)

    data = _command(sub, "data", "data requests: export or erase a device's events")
    requests = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("export", "write the device's (or one user's) events as JSON lines"),
        ("erase", "delete the device's (or one user's) events in one transaction"),
    ):
        req = _command(requests, action, text)
        _add_db(req)
        req.add_argument("--device", required=True, help="device id")
        req.add_argument(
            "--user", default=None, help="only this user of the device (default: every user)"
        )
        if action == "export":
            req.add_argument("--out", required=True, type=Path, help="JSON lines file to write")
    data.set_defaults(func=_cmd_data)

    ret = _command(sub, "retention", "drop the server's events older than a number of days")
    _add_db(ret)
    ret.add_argument("--days", required=True, type=float, help="keep this many days")
    ret.set_defaults(func=_cmd_retention)

    dev = _command(sub, "device", "add, revoke or list the sync server's devices")
    actions = dev.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("add", "register a device (or re-issue its token) and print the new token"),
        ("revoke", "revoke the device's token (its requests get 401)"),
        ("list", "print every device: id, active or revoked, when it was added"),
    ):
        act = _command(actions, action, text)
        _add_db(act)
        if action != "list":
            act.add_argument("device_id", help="the device's id")
    dev.set_defaults(func=_cmd_device)

    key = _command(sub, "keygen", "write an Ed25519 key pair for signing bundles")
    key.add_argument("--out", required=True, type=Path, help="private key file (KEY.pub too)")
    key.set_defaults(func=_cmd_keygen)

    pub = _command(sub, "publish", "sign a bundle and make it the latest on the server")
    pub.add_argument("bundle_dir", type=Path, help="bundle folder (from pocketrec convert)")
    pub.add_argument("--server-dir", required=True, type=Path, help="the server's --bundles")
    pub.add_argument("--key", required=True, type=Path, help="private key from pocketrec keygen")
    _add_db(pub)
    pub.set_defaults(func=_cmd_publish)

    exp = _command(
        sub, "export-feedback", "write the collected events as training data (CSV or Parquet)"
    )
    _add_db(exp)
    exp.add_argument(
        "--out", required=True, type=Path, help="CSV file, or folder for --format parquet"
    )
    exp.add_argument(
        "--format",
        choices=("csv", "parquet"),
        default="csv",
        help="csv (one file) or parquet (a folder of day=YYYY-MM-DD partitions)",
    )
    exp.set_defaults(func=_cmd_export_feedback)


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default="server.db",
        help="server database: a SQLite file or a postgresql://... URI (extra: postgres)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (2 with a one-line message on
    stderr for an error the user can fix: bad arguments, files, a missing extra)."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"  # the runtime and child processes see it too
    quiet_tensorflow()
    extra, modules = _NEEDS.get(args.command, ("", ()))
    try:
        require(modules, extra, f"pocketrec {args.command}")
        try:
            return int(args.func(args))
        except ModuleNotFoundError as exc:
            if not extra or exc.name is None:
                raise
            package = exc.name.split(".")[0]
            raise missing_dependency(package, extra, f"pocketrec {args.command}") from exc
    except (ValueError, FileNotFoundError, FileExistsError, PocketrecError) as exc:
        print(f"pocketrec {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
