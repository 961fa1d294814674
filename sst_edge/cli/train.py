"""`sst-edge train`: the supernet trained on few-shot episodes while the space shrinks, or one found
subnet fine-tuned. The defaults shown are TrainConfig's, ShrinkConfig's and HeadConfig's.

The training loop (torch, NNI) is imported inside the verb: `--help` and the device install must not
load it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..device.settings import DEFAULT_HEAD, DEFAULT_WINDOW, FROM_RUN, HEADS, HeadConfig
from ..errors import SSTEdgeError
from ..train.config import PRECISIONS, ShrinkConfig, TrainConfig
from ._common import DefaultsFormatter, add_device_option, add_json, default, emit, fixed_window


def _config(args: argparse.Namespace) -> TrainConfig:
    space = args.space
    if space is None:
        if args.subnet is None:
            raise SSTEdgeError("--space is required (unless --subnet names the space)")
        from ..train.finetune import subnet_space  # host: torch

        space = subnet_space(args.subnet)
    return TrainConfig(
        space=space,
        data=str(Path(args.data).resolve()),
        split=str(Path(args.split).resolve()) if args.split else None,
        way=args.way,
        shot=args.shot,
        query=args.query,
        episodes=args.episodes,
        epochs=args.epochs,
        lr=args.lr,
        lr_warmup=args.lr_warmup,
        weight_decay=args.weight_decay,
        clip_grad=args.clip_grad,
        head=_head(args),
        shrink=ShrinkConfig(
            warmup=args.warmup,
            period=args.shrink_period,
            drop_percent=args.drop_percent,
            confidence=args.confidence,
            lam=args.lam,
            min_count=args.min_count,
        ),
        latency_table=args.latency_table,
        allow_foreign_table=args.allow_foreign_table,
        resize=args.resize,
        hflip=args.hflip,
        val_episodes=args.val_episodes,
        seed=args.seed,
        workers=args.workers,
        threads=args.threads,
        device=args.device,
        precision=args.precision,
        episodes_per_step=args.episodes_per_step,
        log_every=args.log_every,
        subnet=str(Path(args.subnet).resolve()) if args.subnet else None,
        init=str(Path(args.init).resolve()) if args.init else None,
    )


def _head(args: argparse.Namespace) -> HeadConfig:
    """The head trained through: what was given, the rest from the defaults, or when fine-tuning (--subnet
    with --init) from the init run, as search, eval and export read it (a value given is a recorded
    override; the fine-tune's run.json keeps both)."""
    window = getattr(args, "window", FROM_RUN)  # absent: not given
    if args.subnet and args.init:
        from ..train.artifacts import choose_head  # host: torch

        used = choose_head(args.init, [args.head] if args.head else None, args.tau, window).head
        return HeadConfig(used.kind, used.tau, used.window)
    return HeadConfig(args.head or DEFAULT_HEAD, args.tau, DEFAULT_WINDOW if window == FROM_RUN else window)


def _train(args: argparse.Namespace) -> int:
    from ..train.loop import estimate_run, train_supernet  # host: torch, NNI

    if args.dry_run:
        return emit(estimate_run(_config(args), args.out, resume=args.resume), args)
    r = train_supernet(_config(args), args.out, resume=args.resume, progress=not args.no_progress)
    if r.rank == 0:  # under torchrun every rank returns here; one report is enough
        emit(r, args)
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    t, s, h = TrainConfig, ShrinkConfig, HeadConfig
    p = sub.add_parser(
        "train",
        help="train a supernet with search-space shrinking",
        formatter_class=DefaultsFormatter,
        description="Train the weight-sharing supernet of a space on few-shot episodes (one uniformly drawn "
        "subnet per episode) and shrink the space as it trains (Algorithm 1 of SST: after "
        "--warmup epochs, at every epoch divisible by --shrink-period score each candidate op / "
        "head count by mean loss + lambda x its block's exact relative cost and drop the worst "
        "of those worse than the best value of their own label beyond the noise, at "
        "--confidence, Welch t with Holm's correction). Writes OUT/supernet.safetensors, "
        "OUT/restriction.json (for --restriction and search), checkpoints every epoch, "
        "metrics.jsonl, run.json and loss/score plots. Runs on a GPU or the CPU (--device, --precision), "
        "and under torchrun unchanged (DistributedDataParallel on NCCL for GPUs, gloo for CPUs). "
        "With --subnet and --init, fine-tune the "
        "subnet that search found, alone, from the weights it inherits from that run (same "
        "loop, checkpoints, --resume and torchrun; no shrinking).",
    )
    p.add_argument("--space", help="space name (search_spaces/NAME.yaml) or path (required unless --subnet)")
    p.add_argument(
        "--data",
        required=True,
        help="dataset folder (DATA/<class>/<clip>.mp4, or DATA/<class>/<clip>/<n>.jpg frames)",
    )
    p.add_argument(
        "--split",
        help="folder of train/val/test split files (default DATA/splits, else a "
        "seeded split of the class folders)",
    )
    p.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in OUT from its newest checkpoint (same options required)",
    )
    g = p.add_argument_group("episodes and optimisation")
    g.add_argument("--way", type=int, default=default(t, "way"), help="classes per episode")
    g.add_argument("--shot", type=int, default=default(t, "shot"), help="support clips per class")
    g.add_argument("--query", type=int, default=default(t, "query"), help="query clips per class")
    g.add_argument(
        "--episodes", type=int, default=default(t, "episodes"), help="episodes (steps) per epoch and rank"
    )
    g.add_argument("--epochs", type=int, default=default(t, "epochs"), help="epochs")
    g.add_argument(
        "--episodes-per-step",
        type=int,
        default=default(t, "episodes_per_step"),
        metavar="K",
        help="episodes per optimizer step and rank: gradients accumulated over K episodes (TRX "
        "accumulates 16); the learning-rate schedule counts optimizer steps",
    )
    g.add_argument("--lr", type=float, default=default(t, "lr"), help="peak AdamW learning rate")
    g.add_argument(
        "--lr-warmup",
        type=int,
        default=default(t, "lr_warmup"),
        help="steps of linear learning-rate warm-up before the cosine decay",
    )
    g.add_argument(
        "--weight-decay", type=float, default=default(t, "weight_decay"), help="AdamW weight decay"
    )
    g.add_argument(
        "--clip-grad", type=float, default=default(t, "clip_grad"), help="gradient-norm clipping, 0 = off"
    )
    g.add_argument(
        "--head",
        choices=list(HEADS),
        help=f"few-shot head trained through (default {default(h, 'kind')}; fine-tuning: the --init run's); "
        "cca (RENet's cross-correlational attention over frames) has weights of its own, trained with the "
        "supernet and saved beside its weights",
    )
    g.add_argument(
        "--tau", type=float,
        help="temperature of the head's softmax and logits (default: the head's, 0.1; cca 0.2; "
        "fine-tuning: the --init run's)"
    )
    g.add_argument(
        "--window",
        type=fixed_window,
        default=argparse.SUPPRESS,
        metavar="W",
        help=f"alignment: a query frame looks at support frames at most W segments away, or 'none' for all "
        f"(default {DEFAULT_WINDOW}; fine-tuning: the --init run's; cca ignores it)",
    )
    g.add_argument("--resize", type=int, help="shorter side before the crop (default size x 8/7)")
    g.add_argument(
        "--hflip",
        action="store_true",
        help="random horizontal flips (off by default: a flip turns left-to-right motion into "
        "right-to-left, another class)",
    )
    r = p.add_argument_group("space shrinking (Algorithm 1)")
    r.add_argument(
        "--warmup", type=int, default=default(s, "warmup"), help="epochs before losses are recorded"
    )
    r.add_argument(
        "--shrink-period",
        type=int,
        default=default(s, "period"),
        help="shrink at the end of every epoch divisible by this, after warm-up",
    )
    r.add_argument(
        "--drop-percent",
        type=float,
        default=default(s, "drop_percent"),
        help="drop at most this %% of the remaining candidates per event, the significantly worst first",
    )
    r.add_argument(
        "--confidence",
        type=float,
        default=default(s, "confidence"),
        help="a candidate goes only if worse than another value of its label beyond the loss "
        "noise at this confidence, family-wise per event (Holm); with no real difference an "
        "event drops anything with probability <= 1 - confidence",
    )
    r.add_argument(
        "--lambda",
        dest="lam",
        type=float,
        default=default(s, "lam"),
        help="loss (nats) worth the cost of a whole mean subnet: score = mean loss + lambda x "
        "(block cost - the label's cheapest) / mean subnet cost",
    )
    r.add_argument(
        "--min-count",
        type=int,
        default=default(s, "min_count"),
        help="steps a candidate needs since the last event to be tested (at least 2)",
    )
    r.add_argument(
        "--latency-table", help="shrink on this latency table's predicted ms (name or path) instead of FLOPs"
    )
    r.add_argument(
        "--allow-foreign-table",
        action="store_true",
        help="use a --latency-table measured on another device (the mismatches are shown)",
    )
    f = p.add_argument_group("fine-tuning a found subnet")
    f.add_argument("--subnet", help="subnet document (best.json): train only this subnet; names the space")
    f.add_argument(
        "--init",
        help="with --subnet: the supernet run (runs/NAME, or a .safetensors) whose "
        "weights the subnet starts from",
    )
    o = p.add_argument_group("run")
    o.add_argument(
        "--val-episodes",
        type=int,
        default=default(t, "val_episodes"),
        help="validation episodes per epoch on meta-val classes, 0 = none",
    )
    o.add_argument("--seed", type=int, default=default(t, "seed"), help="seed of every random choice")
    o.add_argument(
        "--workers", type=int, default=default(t, "workers"), help="data-loading processes per rank"
    )
    o.add_argument(
        "--threads",
        type=int,
        help="torch threads per process (default: cores / processes - workers, at least 1)",
    )
    o.add_argument(
        "--log-every", type=int, default=default(t, "log_every"), help="steps per metrics.jsonl line"
    )
    add_device_option(o, "the supernet trains")
    o.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=default(t, "precision"),
        help="the model's arithmetic (torch.autocast; fp16 with loss scaling); the few-shot head and the "
        "loss stay fp32. auto: bf16 where the GPU or CPU multiplies bf16 natively, else fp32 (the "
        "choice and why go into run.json)",
    )
    o.add_argument(
        "--dry-run",
        action="store_true",
        help="time a few steps and a few validation episodes, print how long the whole run takes, "
        "write nothing",
    )
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_json(o)
    p.set_defaults(func=_train)
