"""The ``pocketrec`` command line.

Commands:
  pocketrec demo       rank a random catalog with the native kernels and print the top 10
  pocketrec backends   list the top-k backends usable on this machine and the C code path
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from pocketrec import __version__
from pocketrec.native import backends, quantize_int8, registry, topk


def _cmd_backends(_args: argparse.Namespace) -> int:
    names = backends()
    print(f"available: {', '.join(names)} (auto picks {registry.resolve('auto')})")
    if "c" in names:
        from pocketrec.native import c_backend

        print(f"C code paths on this CPU: {', '.join(c_backend.available_isas())}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    items = rng.standard_normal((args.items, args.dim)).astype(np.float32)
    query = rng.standard_normal(args.dim).astype(np.float32)
    seen = np.zeros(args.items, dtype=bool)
    seen[rng.choice(args.items, size=min(args.items, 100), replace=False)] = True
    backend = registry.resolve(args.backend)
    topk(items, query, args.k, exclude=seen, backend=backend)  # warm-up (numba compiles)
    start = time.perf_counter()
    ids, scores = topk(items, query, args.k, exclude=seen, backend=backend)
    elapsed_us = (time.perf_counter() - start) * 1e6
    codes = quantize_int8(items)
    ids8, _ = topk(codes, query, args.k, exclude=seen, backend=backend)
    print(
        f"catalog: {args.items} random items, D={args.dim}, {int(seen.sum())} excluded as seen; "
        f"backend: {backend}"
    )
    print(f"{'rank':>4}  {'item':>8}  {'score':>9}")
    for rank, (item, score) in enumerate(zip(ids.tolist(), scores.tolist(), strict=True), 1):
        print(f"{rank:>4}  {item:>8}  {score:>9.4f}")
    overlap = len(set(ids.tolist()) & set(ids8.tolist()))
    print(f"float32 top-{args.k} in {elapsed_us:.0f} µs; int8 catalog agrees on {overlap}/{args.k}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pocketrec`` command (one sub-parser per command)."""
    parser = argparse.ArgumentParser(prog="pocketrec", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pocketrec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="rank a random catalog and print the top 10")
    demo.add_argument("--items", type=int, default=100_000, help="catalog size (default 100000)")
    demo.add_argument("--dim", type=int, default=64, help="vector dimension (default 64)")
    demo.add_argument("--k", type=int, default=10, help="results to print (default 10)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--backend", default="auto", help="auto, c, numba or numpy (default auto)")
    demo.set_defaults(func=_cmd_demo)

    info = sub.add_parser("backends", help="list the top-k backends usable on this machine")
    info.set_defaults(func=_cmd_backends)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"pocketrec {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
