"""`sst-edge demo`: the whole path on the synthetic dataset and sst_tiny, with a summary at the end.

The demo runs every stage (torch, NNI, ONNX Runtime); it is imported when the verb runs."""

from __future__ import annotations

import argparse

from ._common import add_json, emit


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo  # host: every stage

    return emit(run_demo(args.out, space=args.space, seed=args.seed, quiet=args.json), args)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole path on the synthetic dataset and sst_tiny",
        description="Generate the synthetic dataset, then run every stage of the path "
        "(space, data, training with shrinking, latency table, search, export, "
        "enrollment, classification) and print a summary table of each stage's "
        "output, time and figures.",
    )
    p.add_argument(
        "--out", default="demo_out", help="folder for everything the demo writes (default demo_out)"
    )
    p.add_argument("--space", default="sst_tiny", help="search space (default sst_tiny)")
    p.add_argument("--seed", type=int, default=0, help="seed for every random choice (default 0)")
    add_json(p)
    p.set_defaults(func=_demo)
