"""`sst-edge eval`: few-shot accuracy with its 95% interval, of a training run (PyTorch) or of an
exported model (ONNX Runtime) on the same episodes.

The two back ends are imported inside the verb: an exported model is evaluated on the device install
(no torch), a run on the host install."""

from __future__ import annotations

import argparse
import sys

from ..device.settings import LITERATURE_EPISODES
from ..errors import SSTEdgeError
from ..fileio import atomic_write_json
from ._common import FROM_RUN, add_device_option, add_json, add_run_head_options, emit


def _eval(args: argparse.Namespace) -> int:
    # None: the head the run trained through (--weights) or the card's (--model)
    heads = None if args.head is None else ["alignment", "prototype"] if args.head == "both" else [args.head]
    episodes = LITERATURE_EPISODES if args.episodes is None else args.episodes
    common = dict(
        split_dir=args.split,
        split=args.eval_split,
        way=args.way,
        shot=args.shot,
        query=args.query,
        episodes=episodes,
        seed=args.seed,
        heads=heads,
        tau=args.tau,
        reversed_pairs=args.reversed_pairs,
        threads=args.threads,
        progress=not args.no_progress,
    )
    if args.model is not None:
        from ..runtime.verbs import eval_model  # device: ONNX Runtime, numpy

        if args.subnet or args.resize:
            raise SSTEdgeError(
                "--subnet and --resize do not apply to an exported model (its card fixes both)", args.model
            )
        r = eval_model(
            args.model, args.data, window="card" if args.window == FROM_RUN else args.window, **common
        )
    else:
        from ..train.evaluate import evaluate  # host: torch, NNI

        if args.space is None:
            raise SSTEdgeError("--weights needs --space (the space the run trained)")
        r = evaluate(
            args.space,
            args.weights,
            args.data,
            subnet=args.subnet,
            resize=args.resize,
            workers=args.workers,
            window=args.window,
            device=args.device,
            **common,
        )
    emit(r, args)
    notes = sys.stderr if args.json else sys.stdout  # --json: stdout holds the JSON alone
    if args.episodes is None:
        print(
            f"({LITERATURE_EPISODES:,} episodes: the few-shot literature's test protocol; --episodes N is "
            "quicker)",
            file=notes,
        )
    if args.out:
        print(f"wrote {atomic_write_json(args.out, r.to_dict())}", file=notes)
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="few-shot accuracy with its 95%% confidence interval on held-out classes",
        description="Accuracy of a subnet on fixed, seeded N-way K-shot episodes of held-out (meta-test) "
        "classes, with the 95%% confidence interval 1.96 x std / sqrt(episodes), as the "
        "few-shot literature reports it (by default its protocol: 10,000 episodes of 1 query "
        "per class). The subnet: --subnet, else the subnet of a fine-tuning run, else the "
        "largest (most FLOPs) subnet of the run's restriction. The head (kind, tau, window): "
        "the one the run trained through (run.json beside the weights), or the card's with "
        "--model; --head, --tau, --window override it, and a difference is reported.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="a training run folder (runs/NAME) or a supernet .safetensors")
    src.add_argument(
        "--model",
        help="an exported model folder (models/NAME): the same episodes, with features from ONNX Runtime",
    )
    p.add_argument("--space", help="space name or path (must match the weights; not needed with --model)")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", help="folder of train/val/test split files (default DATA/splits)")
    p.add_argument(
        "--eval-split",
        choices=["test", "val", "train"],
        default="test",
        help="classes to evaluate on (default test: meta-test)",
    )
    p.add_argument(
        "--subnet",
        help="subnet document (best.json); default the fine-tuned subnet of a "
        "fine-tuning run, else the largest of the run's restriction",
    )
    p.add_argument("--way", type=int, default=5, help="classes per episode (default 5)")
    p.add_argument("--shot", type=int, default=1, help="support clips per class (default 1)")
    p.add_argument("--query", type=int, default=1, help="query clips per class (default 1)")
    p.add_argument(
        "--episodes",
        type=int,
        help=f"episodes (default {LITERATURE_EPISODES:,}, the literature's test protocol; fewer run quicker)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the episodes (default 0)")
    p.add_argument(
        "--head",
        choices=["alignment", "prototype", "cca", "both"],
        help="few-shot head; both = the two on the same episodes and features (default: the "
        "run's, or the card's with --model)",
    )
    add_run_head_options(p, "the run's (run.json beside the weights), or the card's with --model")
    p.add_argument(
        "--reversed-pairs",
        action="store_true",
        help="2-way episodes of class pairs that are each other played backwards (listed in "
        "DATA/classes.json by the synthetic dataset): only temporal order separates them",
    )
    p.add_argument("--resize", type=int, help="shorter side before the centre crop (default size x 8/7)")
    p.add_argument(
        "--workers", type=int, default=1, help="data-loading processes (default 1; --weights only)"
    )
    p.add_argument("--threads", type=int, help="torch threads (default: cores - workers)")
    add_device_option(p, "the supernet embeds the clips (--weights only; an exported model runs on "
                      "the providers of its card)")
    p.add_argument("--out", help="also write the result as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json(p)
    p.set_defaults(func=_eval)
