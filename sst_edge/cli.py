"""`sst-edge`: a thin command-line layer. Each verb parses its arguments and calls one library function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .cli_deploy import FROM_RUN, add_export, add_run_head_options, add_runtime
from .errors import SSTEdgeError
from .fileio import os_reason
from .text import brief, printable


# --------------------------------------------------------------------------------------------- space
def _cmd_space_show(args: argparse.Namespace) -> int:
    from .space.report import show_space

    show_space(args.space, restrict=args.restrict, samples=args.samples, seed=args.seed)
    return 0


def _cmd_space_sample(args: argparse.Namespace) -> int:
    from .space.report import sample_subnet

    path = sample_subnet(args.space, seed=args.seed, out=args.out, restrict=args.restrict)
    print(f"wrote {path}")
    return 0


def _cmd_space_check(args: argparse.Namespace) -> int:
    from .space.report import check_subnet

    check_subnet(args.subnet, space=args.space)
    return 0


def _add_space(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space", help="inspect a search space and sample subnets",
                       description="Inspect an SST search space (search_spaces/NAME.yaml) and its subnets.")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    show = verbs.add_parser("show", help="labels, size, FLOPs/params of smallest, largest, random subnets",
                            description="Print the labels of a space, its number of architectures, and the "
                                        "FLOPs (multiply-adds, as fvcore counts) and params of the smallest, "
                                        "the largest and a few random subnets.")
    show.add_argument("--space", required=True, help="space name (search_spaces/NAME.yaml) or path to a YAML")
    show.add_argument("--restrict", help="a shrunk-space JSON written by training; show only what it keeps")
    show.add_argument("--samples", type=int, default=3, help="number of random subnets to list (default 3)")
    show.add_argument("--seed", type=int, default=0, help="seed for the random subnets (default 0)")
    show.set_defaults(func=_cmd_space_show)

    sample = verbs.add_parser("sample", help="write a random valid subnet document",
                              description="Draw one subnet uniformly from the space and write it as a subnet "
                                          "document (the format of best.json).")
    sample.add_argument("--space", required=True, help="space name or path")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--out", required=True, help="where to write the subnet JSON")
    sample.add_argument("--restrict", help="a shrunk-space JSON: sample only from what it keeps")
    sample.set_defaults(func=_cmd_space_sample)

    check = verbs.add_parser("check", help="validate a subnet document against its space",
                             description="Load a subnet document and check every label and value against the "
                                         "space and the space's hash; print every problem found.")
    check.add_argument("subnet", help="subnet JSON (best.json)")
    check.add_argument("--space", help="space name or path (default: the one the document names)")
    check.set_defaults(func=_cmd_space_check)


# ---------------------------------------------------------------------------------------------- data
# (the data verbs are added by _add_data below)
def _cmd_data_synth(args: argparse.Namespace) -> int:
    from .data.synth import generate_synthetic

    out = generate_synthetic(args.out, classes=args.classes, clips=args.clips, frames=args.frames,
                             size=args.size, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote {args.classes} classes x {args.clips} clips to {out} (splits in {out / 'splits'}, "
          f"classes in {out / 'classes.json'})")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from .data.check import check_dataset, print_report

    report = check_dataset(args.dir, decoder=args.decoder, frames=args.frames, full=args.full)
    print_report(report)
    return 0 if report.ok else 1


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="make and check video datasets",
                       description="Generate the synthetic temporal-action dataset, or check a dataset.")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    synth = verbs.add_parser(
        "synth", help="write the synthetic temporal-action dataset (H.264 mp4)",
        description="Write a procedural temporal-action dataset: OUT/<class>/<clip>.mp4, split files "
                    "OUT/splits/{train,val,test}.txt (ARN/OTAM format) and OUT/classes.json. Classes differ "
                    "by motion and appearance; some pairs are the same clips played backwards and share a "
                    "split, so only temporal order separates them. The same seed gives the same files.")
    synth.add_argument("--out", required=True, help="output folder (new or empty)")
    synth.add_argument("--classes", type=int, default=24,
                       help="number of classes, >= 4 (default 24: 12 train / 6 val / 6 test; 5-way "
                            "episodes on val and test need >= 20)")
    synth.add_argument("--clips", type=int, default=10, help="clips per class (default 10)")
    synth.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    synth.add_argument("--size", type=int, default=64,
                       help="frame height in pixels, even (default 64; frames are 4:3, 64x86)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--overwrite", action="store_true",
                       help="replace an earlier synthetic dataset in OUT (nothing else is ever deleted)")
    synth.set_defaults(func=_cmd_data_synth)

    check = verbs.add_parser(
        "check", help="scan a dataset: clips per class and every unreadable clip",
        description="Probe every clip of DIR/<class>/<clip>.<ext> (or frame folder DIR/<class>/<clip>/ of "
                    "numbered jpg/png images), decode a few frames of each as evaluation would, and print a "
                    "table of clips per class, then every unreadable clip or image with the reason, every "
                    "split-file entry (DIR/splits) whose clip is missing, and warnings (empty folders, gaps "
                    "in a frame folder's numbering). "
                    "Exit status: 0 if every clip is readable and every split entry exists, 1 if not "
                    "(the problems are listed), 2 if DIR is not a dataset.")
    check.add_argument("dir", help="dataset folder")
    check.add_argument("--decoder", default="auto", choices=["auto", "decord", "pyav"],
                       help="decoder to test with (default auto: decord if installed, else PyAV)")
    check.add_argument("--frames", type=int, default=8, help="frames decoded per clip (default 8)")
    check.add_argument("--full", action="store_true", help="also decode every frame of every clip (slow)")
    check.set_defaults(func=_cmd_data_check)


# --------------------------------------------------------------------------------------- train, eval
def _window(text: str) -> int | None:
    if text.lower() in ("none", "all"):
        return None
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"window must be >= 0 or 'none', got {text}")
    return value


def _add_head_options(p: argparse.ArgumentParser) -> None:
    from .device.heads import DEFAULT_TAU, DEFAULT_WINDOW

    p.add_argument("--tau", type=float, default=DEFAULT_TAU,
                   help=f"temperature of the head's softmax and logits (default {DEFAULT_TAU})")
    p.add_argument("--window", type=_window, default=DEFAULT_WINDOW, metavar="W",
                   help="alignment: a query frame looks at support frames at most W segments away, or "
                        f"'none' for all (default {DEFAULT_WINDOW})")


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .device.heads import HeadConfig
    from .train.config import ShrinkConfig, TrainConfig
    from .train.loop import train_supernet

    space = args.space
    if space is None:
        if args.subnet is None:
            raise SSTEdgeError("--space is required (unless --subnet names the space)")
        from .train.finetune import subnet_space

        space = subnet_space(args.subnet)
    cfg = TrainConfig(
        space=space, data=str(Path(args.data).resolve()),
        split=str(Path(args.split).resolve()) if args.split else None, way=args.way, shot=args.shot,
        query=args.query, episodes=args.episodes, epochs=args.epochs, lr=args.lr, lr_warmup=args.lr_warmup,
        weight_decay=args.weight_decay, clip_grad=args.clip_grad,
        head=HeadConfig(args.head, args.tau, args.window),
        shrink=ShrinkConfig(warmup=args.warmup, period=args.shrink_period, drop_percent=args.drop_percent,
                            confidence=args.confidence, lam=args.lam, min_count=args.min_count),
        latency_table=args.latency_table, allow_foreign_table=args.allow_foreign_table, resize=args.resize,
        hflip=args.hflip,
        val_episodes=args.val_episodes, seed=args.seed, workers=args.workers, threads=args.threads,
        log_every=args.log_every, subnet=str(Path(args.subnet).resolve()) if args.subnet else None,
        init=str(Path(args.init).resolve()) if args.init else None)
    r = train_supernet(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    if r.rank == 0:  # under torchrun every rank returns here; one report is enough
        val = [v for v in r.val_acc if v is not None]
        print(f"{'fine-tuned' if r.subnet else 'trained'} {r.epochs} epochs ({r.steps} steps) in "
              f"{r.seconds:.0f} s: loss {r.first_epoch_loss:.4f} (epoch 1) -> {r.last_epoch_loss:.4f} "
              f"(epoch {r.epochs})" + (f", validation accuracy {val[-1]:.3f}" if val else ""))
        if r.subnet:
            print(f"wrote {r.out}/: supernet.safetensors (the subnet of {args.subnet} alone), shrunk.json, "
                  "metrics.jsonl, run.json, loss.png")
        else:
            print(f"shrinking dropped {len(r.dropped)} candidates: {r.full_space_size:,} -> "
                  f"{r.space_size:,} architectures" + (f" ({', '.join(r.dropped)})" if r.dropped else ""))
            print(f"wrote {r.out}/: supernet.safetensors, shrunk.json, metrics.jsonl, run.json, loss.png, "
                  "scores.png")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a supernet with search-space shrinking",
        description="Train the weight-sharing supernet of a space on few-shot episodes (one uniformly drawn "
                    "subnet per episode) and shrink the space as it trains (Algorithm 1 of SST: after "
                    "--warmup epochs, at every epoch divisible by --shrink-period score each candidate op / "
                    "head count by mean loss + lambda x its block's exact relative cost and drop the worst "
                    "of those worse than the best value of their own label beyond the noise, at "
                    "--confidence, Welch t with Holm's correction). Writes OUT/"
                    "supernet.safetensors, OUT/shrunk.json (for --restrict and search), checkpoints every "
                    "epoch, metrics.jsonl, run.json and loss/score plots. Runs under torchrun "
                    "(DistributedDataParallel on gloo) unchanged. With --subnet and --init, fine-tune the "
                    "subnet that search found, alone, from the weights it inherits from that run (same "
                    "loop, checkpoints, --resume and torchrun; no shrinking).")
    p.add_argument("--space", help="space name (search_spaces/NAME.yaml) or path (required unless --subnet)")
    p.add_argument("--data", required=True,
                   help="dataset folder (DATA/<class>/<clip>.mp4, or DATA/<class>/<clip>/<n>.jpg frames)")
    p.add_argument("--split", help="folder of train/val/test split files (default DATA/splits, else a "
                                   "seeded split of the class folders)")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT from its newest checkpoint (same options required)")
    g = p.add_argument_group("episodes and optimisation")
    g.add_argument("--way", type=int, default=5, help="classes per episode (default 5)")
    g.add_argument("--shot", type=int, default=1, help="support clips per class (default 1)")
    g.add_argument("--query", type=int, default=3, help="query clips per class (default 3)")
    g.add_argument("--episodes", type=int, default=200,
                   help="episodes (steps) per epoch and rank (default 200)")
    g.add_argument("--epochs", type=int, default=10, help="epochs (default 10)")
    g.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default 1e-3)")
    g.add_argument("--lr-warmup", type=int, default=100,
                   help="steps of linear learning-rate warm-up before the cosine decay (default 100)")
    g.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default 0.05)")
    g.add_argument("--clip-grad", type=float, default=1.0, help="gradient-norm clipping, 0 = off (default 1)")
    g.add_argument("--head", choices=["alignment", "prototype"], default="alignment",
                   help="few-shot head trained through (default alignment)")
    _add_head_options(g)
    g.add_argument("--resize", type=int, help="shorter side before the crop (default size x 8/7)")
    g.add_argument("--hflip", action="store_true",
                   help="random horizontal flips (off by default: a flip turns left-to-right motion into "
                        "right-to-left, another class)")
    s = p.add_argument_group("space shrinking (Algorithm 1)")
    s.add_argument("--warmup", type=int, default=2, help="epochs before losses are recorded "
                                                         "(default 2)")
    s.add_argument("--shrink-period", type=int, default=2,
                   help="shrink at the end of every epoch divisible by this, after warm-up (default 2)")
    s.add_argument("--drop-percent", type=float, default=10.0,
                   help="drop at most this %% of the remaining candidates per event, the significantly "
                        "worst first (default 10)")
    s.add_argument("--confidence", type=float, default=0.95,
                   help="a candidate goes only if worse than another value of its label beyond the loss "
                        "noise at this confidence, family-wise per event (Holm); with no real difference an "
                        "event drops anything with probability <= 1 - confidence (default 0.95)")
    s.add_argument("--lambda", dest="lam", type=float, default=0.5,
                   help="loss (nats) worth the cost of a whole mean subnet: score = mean loss + lambda x "
                        "(block cost - the label's cheapest) / mean subnet cost (default 0.5)")
    s.add_argument("--min-count", type=int, default=5,
                   help="steps a candidate needs since the last event to be tested (at least 2; default 5)")
    s.add_argument("--latency-table", help="shrink on this latency table's predicted ms (name or path) "
                                           "instead of FLOPs")
    s.add_argument("--allow-foreign-table", action="store_true",
                   help="use a --latency-table measured on another device (the mismatches are shown)")
    f = p.add_argument_group("fine-tuning a found subnet")
    f.add_argument("--subnet", help="subnet document (best.json): train only this subnet; names the space")
    f.add_argument("--init", help="with --subnet: the supernet run (runs/NAME, or a .safetensors) whose "
                                  "weights the subnet starts from")
    o = p.add_argument_group("run")
    o.add_argument("--val-episodes", type=int, default=50,
                   help="validation episodes per epoch on meta-val classes, 0 = none (default 50)")
    o.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    o.add_argument("--workers", type=int, default=1, help="data-loading processes per rank (default 1)")
    o.add_argument("--threads", type=int,
                   help="torch threads per process (default: cores / processes - workers, at least 1)")
    o.add_argument("--log-every", type=int, default=10, help="steps per metrics.jsonl line (default 10)")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .device.evaluation import LITERATURE_EPISODES
    from .fileio import atomic_write_json

    # None: the head the run trained through (--weights) or the card's (--model)
    heads = None if args.head is None else ["alignment", "prototype"] if args.head == "both" else [args.head]
    episodes = LITERATURE_EPISODES if args.episodes is None else args.episodes
    common = dict(split_dir=args.split, split=args.eval_split, way=args.way, shot=args.shot, query=args.query,
                  episodes=episodes, seed=args.seed, heads=heads, tau=args.tau,
                  reversed_pairs=args.reversed_pairs, threads=args.threads, progress=not args.no_progress)
    if args.model is not None:
        from .runtime.verbs import eval_model

        if args.subnet or args.resize:
            raise SSTEdgeError("--subnet and --resize do not apply to an exported model (its card fixes "
                               "both)", args.model)
        r = eval_model(args.model, args.data, window="card" if args.window == FROM_RUN else args.window,
                       **common)
    else:
        from .train.evaluate import evaluate

        if args.space is None:
            raise SSTEdgeError("--weights needs --space (the space the run trained)")
        r = evaluate(args.space, args.weights, args.data, subnet=args.subnet, resize=args.resize,
                     workers=args.workers, window=args.window, **common)
    print("\n".join(r.lines()))
    if args.episodes is None:
        print(f"({LITERATURE_EPISODES:,} episodes: the few-shot literature's test protocol; --episodes N is "
              "quicker)")
    if args.out:
        print(f"wrote {atomic_write_json(args.out, r.to_dict())}")
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="few-shot accuracy with its 95%% confidence interval on held-out classes",
        description="Accuracy of a subnet on fixed, seeded N-way K-shot episodes of held-out (meta-test) "
                    "classes, with the 95%% confidence interval 1.96 x std / sqrt(episodes), as the "
                    "few-shot literature reports it (by default its protocol: 10,000 episodes of 1 query "
                    "per class). The subnet: --subnet, else the subnet of a fine-tuning run, else the "
                    "largest (most FLOPs) subnet of the run's shrunk space. The head (kind, tau, window): "
                    "the one the run trained through (run.json beside the weights), or the card's with "
                    "--model; --head, --tau, --window override it, and a difference is reported.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="a training run folder (runs/NAME) or a supernet .safetensors")
    src.add_argument("--model", help="an exported model folder (models/NAME): the same episodes, with "
                                     "features from ONNX Runtime")
    p.add_argument("--space", help="space name or path (must match the weights; not needed with --model)")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", help="folder of train/val/test split files (default DATA/splits)")
    p.add_argument("--eval-split", choices=["test", "val", "train"], default="test",
                   help="classes to evaluate on (default test: meta-test)")
    p.add_argument("--subnet", help="subnet document (best.json); default the fine-tuned subnet of a "
                                    "fine-tuning run, else the largest of the shrunk space")
    p.add_argument("--way", type=int, default=5, help="classes per episode (default 5)")
    p.add_argument("--shot", type=int, default=1, help="support clips per class (default 1)")
    p.add_argument("--query", type=int, default=1, help="query clips per class (default 1)")
    p.add_argument("--episodes", type=int,
                   help="episodes (default 10,000, the literature's test protocol; fewer run quicker)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episodes (default 0)")
    p.add_argument("--head", choices=["alignment", "prototype", "both"],
                   help="few-shot head; both = the two on the same episodes and features (default: the "
                        "run's, or the card's with --model)")
    add_run_head_options(p, "the run's (run.json beside the weights), or the card's with --model")
    p.add_argument("--reversed-pairs", action="store_true",
                   help="2-way episodes of class pairs that are each other played backwards (listed in "
                        "DATA/classes.json by the synthetic dataset): only temporal order separates them")
    p.add_argument("--resize", type=int, help="shorter side before the centre crop (default size x 8/7)")
    p.add_argument("--workers", type=int, default=1,
                   help="data-loading processes (default 1; --weights only)")
    p.add_argument("--threads", type=int, help="torch threads (default: cores - workers)")
    p.add_argument("--out", help="also write the result as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_eval)


# -------------------------------------------------------------------------------------------- search
def _cmd_search(args: argparse.Namespace) -> int:
    from .search import SearchSettings, run_search

    settings = SearchSettings(
        trials=args.trials, population=args.population, sample_size=args.sample_size, seed=args.seed,
        way=args.way, shot=args.shot, query=args.query, episodes=args.episodes, split=args.split,
        split_dir=args.split_dir, concurrency=args.concurrency, budget_ms=args.budget_ms,
        budget_gflops=args.budget_gflops, table=args.latency_table,
        allow_foreign_table=args.allow_foreign_table, head=args.head, tau=args.tau, window=args.window,
        rescore_top=args.rescore_top, rescore_episodes=args.rescore_episodes, baseline=not args.no_baseline,
        threads=args.threads, port=args.port)
    summary = run_search(args.space, args.weights, args.data, args.out, settings, restrict=args.restrict)
    from .search.report import summary_lines

    print("\n".join(summary_lines(summary)))
    print(f"wrote {args.out}/best.json, trials.csv, pareto.png, search.json")
    return 0


def _add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search", help="hardware-aware search over a trained supernet (NNI experiment, budget)",
        description="Search the (shrunk) space of a trained supernet with NNI's RegularizedEvolution under "
                    "a latency budget (a latency table's prediction) or a FLOPs budget, enforced as an NNI "
                    "ExpressionConstraint. Every candidate inherits its weights from the supernet and is "
                    "scored on the same fixed, seeded validation episodes. A random baseline of the same "
                    "number of subnets under the same budget runs in the same command. Then the top "
                    "--rescore-top of each are re-scored on --rescore-episodes other validation episodes; "
                    "best.json is the evolution's best re-scored subnet, compared with the baseline's on "
                    "those episodes (paired t-test). The head is the one the run trained through (run.json "
                    "beside the weights) unless --head/--tau/--window say otherwise. Writes best.json, "
                    "trials.csv, pareto.png (accuracy vs cost with 95%% CIs, Pareto front, budget line), "
                    "search.json.")
    p.add_argument("--space", required=True, help="space name or path")
    p.add_argument("--weights", required=True, help="training run folder (or supernet .safetensors)")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--out", required=True, help="output folder (new)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-ms", type=float, help="latency budget in ms (needs --latency-table)")
    budget.add_argument("--budget-gflops", type=float, help="FLOPs budget in G multiply-adds")
    p.add_argument("--latency-table", help="latency table (name or path) for --budget-ms")
    p.add_argument("--allow-foreign-table", action="store_true",
                   help="use a table made for another device or target anyway")
    p.add_argument("--restrict", help="shrunk-space JSON (default: shrunk.json of the training run, if any)")
    p.add_argument("--trials", type=int, default=40, help="evolution trials (default 40)")
    p.add_argument("--population", type=int, default=12, help="evolution population (default 12)")
    p.add_argument("--sample-size", type=int, default=4, help="tournament sample size (default 4)")
    p.add_argument("--episodes", type=int, default=40, help="validation episodes per candidate (default 40)")
    p.add_argument("--way", type=int, default=5)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--query", type=int, default=2, help="queries per class (default 2)")
    p.add_argument("--split", default="val", choices=["train", "val", "test"],
                   help="classes the candidates are scored on (default val; keep test for the end)")
    p.add_argument("--split-dir", help="folder of split files (default DATA/splits)")
    p.add_argument("--head", choices=["alignment", "prototype"],
                   help="few-shot head (default: the one the run trained through, from its run.json)")
    add_run_head_options(p, "the run's, from run.json beside the weights")
    p.add_argument("--rescore-top", type=int, default=5,
                   help="re-score this many best subnets of the evolution and of the random baseline "
                        "(default 5)")
    p.add_argument("--rescore-episodes", type=int, default=200,
                   help="validation episodes of the re-scoring, other than the search's (default 200)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="1: NNI's in-process engine; N > 1: NNI's local engine with N trial processes")
    p.add_argument("--port", type=int, default=8745, help="port of NNI's manager (local engine)")
    p.add_argument("--no-baseline", action="store_true", help="skip the random baseline")
    p.add_argument("--threads", type=int, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_search)


# ---------------------------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, space=args.space, seed=args.seed)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole path on the synthetic dataset and sst_tiny",
                       description="Generate the synthetic dataset, then run every stage of the path "
                                   "(space, data, training with shrinking, latency table, search, export, "
                                   "enrollment, classification) and print a summary table of each stage's "
                                   "output, time and figures.")
    p.add_argument("--out", default="demo_out",
                   help="folder for everything the demo writes (default demo_out)")
    p.add_argument("--space", default="sst_tiny", help="search space (default sst_tiny)")
    p.add_argument("--seed", type=int, default=0, help="seed for every random choice (default 0)")
    p.set_defaults(func=_cmd_demo)


# ------------------------------------------------------------------------------------------- profile
# The options each bundle step takes; any other given with it is refused, not silently ignored.
_PROFILE_STEPS = {
    "bundle": {"space", "target", "backend", "validate", "seed", "rounds", "clock", "quick", "overwrite"},
    "run_bundle": {"rounds", "clock", "quick"},
    "from_bundle": {"space", "out", "overwrite"},
}
_PROFILE_OPTIONS = ("space", "target", "out", "overwrite", "backend", "validate", "seed", "rounds", "clock",
                    "quick", "allow_foreign_table")


def _refuse_unused(args: argparse.Namespace) -> None:
    step = next((s for s in _PROFILE_STEPS if getattr(args, s) is not None), None)
    if step is None:
        return
    unused = [f"--{k.replace('_', '-')}" for k in _PROFILE_OPTIONS
              if k not in _PROFILE_STEPS[step] and getattr(args, k) not in (None, False, 0, "auto")]
    if unused:
        raise SSTEdgeError(f"--{step.replace('_', '-')} does not take {', '.join(unused)}")


def _cmd_profile(args: argparse.Namespace) -> int:
    _refuse_unused(args)
    progress = not args.no_progress
    if args.run_bundle is not None:  # the device half: before anything imports sst_edge.cost (torch)
        from .device.bundle import run_bundle_verb

        print(run_bundle_verb(args.run_bundle, args.rounds, args.clock, args.quick, progress))
        return 0
    from .cost.profile import describe, run_profile, write_bundle_verb

    if args.bundle is not None:
        print(write_bundle_verb(args.space, args.target, args.bundle, args.validate, args.seed, args.rounds,
                                args.clock, args.quick, args.overwrite, args.backend, progress))
        return 0
    table = run_profile(space=args.space, target=args.target, table=args.table, out=args.out,
                        backend=args.backend, validate=args.validate, seed=args.seed, rounds=args.rounds,
                        clock=args.clock, quick=args.quick, overwrite=args.overwrite,
                        allow_foreign=args.allow_foreign_table, progress=progress,
                        from_bundle=args.from_bundle)
    print(describe(table))
    return 0


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile", help="measure a latency table on this device, or check / re-validate one",
        description="Measure a latency lookup table: every fixed part and every (stage, op, heads) block of "
                    "a space, timed per clip (batch 1) as the target deploys it (ONNX Runtime with its "
                    "execution provider, precision and threads; or PyTorch eager with --backend torch). "
                    "With --validate N, also time N random whole subnets, fit a correction for what the "
                    "sum of parts misses, store the figures (within 5%/10%, RMSPE, Kendall's tau; "
                    "raw and leave-one-out corrected) and draw TABLE.validation.png. Parts and subnets "
                    "are timed in one interleaved pool; rounds disturbed by other processes are redone "
                    "when the machine is quiet, and the table records how loaded it was. With --table, "
                    "check a table against its space, target and this device (and re-validate it with "
                    "--validate N). A device without torch is profiled in three steps: --bundle DIR "
                    "(host: export the parts and subnets as ONNX files with a manifest), --run-bundle DIR "
                    "(device: time them with ONNX Runtime and numpy only, writing DIR/timings.json), "
                    "--from-bundle DIR (host: build the table, with the device's fingerprint).")
    p.add_argument("--space", help="space name (search_spaces/NAME.yaml) or path; with --table or "
                                   "--from-bundle, the space to check against (default: the one it names)")
    p.add_argument("--target", help="deployment target (export/NAME.yaml) or path, e.g. cpu-fp32")
    step = p.add_mutually_exclusive_group()
    step.add_argument("--table", help="an existing table (latency_tables/NAME.json or a path) to check, "
                                      "print or re-validate instead of measuring a new one")
    step.add_argument("--bundle", metavar="DIR",
                      help="host, with --space and --target: write the parts (and --validate N subnets) as "
                           "the target's ONNX files plus DIR/bundle.json, for a device to time")
    step.add_argument("--run-bundle", metavar="DIR",
                      help="device (ONNX Runtime and numpy, no torch): time the bundle in DIR and write "
                           "DIR/timings.json (the manifest's policy unless --rounds, --clock or --quick)")
    step.add_argument("--from-bundle", metavar="DIR",
                      help="host: build the table from DIR/bundle.json and the timings.json the device "
                           "wrote, with that device's fingerprint (--out, --overwrite as for a new table)")
    p.add_argument("--out", help="where to write the table (default latency_tables/SPACE.TARGET.json; "
                                 "with --table, the table itself)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out table (with --bundle, an existing bundle in DIR)")
    p.add_argument("--backend", choices=["onnxruntime", "torch"],
                   help="runtime to time on (default: the target's; torch = PyTorch eager)")
    p.add_argument("--validate", type=int, default=0, metavar="N",
                   help="time N random whole subnets end to end and store the accuracy figures (0 = no)")
    p.add_argument("--seed", type=int, default=0, help="seed for inputs, round order and subnets (default 0)")
    p.add_argument("--rounds", type=int,
                   help="interleaved timing rounds per part and subnet, ~10 runs each (default 8, or with "
                        "--run-bundle the bundle's; unstable medians get 2 more)")
    p.add_argument("--clock", default="auto", choices=["auto", "wall", "thread"],
                   help="auto (default; with --run-bundle, the bundle's): the calling thread's CPU time "
                        "for one-thread CPU targets (time other processes hold the core is not counted), "
                        "wall time otherwise")
    p.add_argument("--quick", action="store_true",
                   help="a handful of runs per part: for smoke tests, not for tables worth keeping")
    p.add_argument("--allow-foreign-table", action="store_true",
                   help="use a --table made for another space, target or device (mismatches are listed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_profile)


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sst-edge",
        description="Find, ship and run few-shot action-recognition video transformers (SST) on edge "
                    "hardware: search space, supernet training with shrinking, latency tables, "
                    "hardware-aware search, export to ONNX/TensorRT, and an on-device few-shot runtime.",
    )
    parser.add_argument("--version", action="version", version=f"sst-edge {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of any failure (for bug reports)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_space(sub)
    _add_data(sub)
    _add_search(sub)
    _add_demo(sub)
    _add_profile(sub)
    _add_train(sub)
    _add_eval(sub)
    add_export(sub)
    add_runtime(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb. The one boundary for failure: bad input of any kind (an SSTEdgeError, an OSError, a
    document nested too deeply) is printed as one named error and exits 2; anything else is a bug, printed
    as such and exiting 1 (with --debug, every failure shows its traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("sst-edge: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        code, text = describe_failure(e)
        print(f"sst-edge: {text}", file=sys.stderr)
        return code


def describe_failure(e: BaseException) -> tuple[int, str]:
    """(exit status, message) of a failure; every character of the message is printable."""
    if isinstance(e, SSTEdgeError):
        return 2, "error: " + "\n".join(printable(line) for line in str(e).split("\n"))
    if isinstance(e, OSError):
        where = f"{printable(e.filename)}: " if e.filename is not None else ""
        return 2, f"error: {where}{os_reason(e)}"
    if isinstance(e, RecursionError):
        return 2, "error: the input is nested too deeply"
    return 1, (f"internal error ({type(e).__name__}: {brief(e, 300)}); this is a bug in sst-edge: run the "
               "command again as `sst-edge --debug ...` and report the traceback")


if __name__ == "__main__":
    sys.exit(main())
