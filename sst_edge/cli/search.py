"""`sst-edge search`: the hardware-aware search over a trained supernet, as an NNI experiment under a
latency or FLOPs budget. The defaults shown are SearchSettings'.

The experiment (torch, NNI) is imported inside the verb: `--help` must not load it."""

from __future__ import annotations

import argparse

from ..device.settings import HEADS
from ..search.settings import SearchSettings
from ._common import DefaultsFormatter, add_device_option, add_json, add_run_head_options, default, emit
from .space import add_restriction_option


def _search(args: argparse.Namespace) -> int:
    from ..search.experiment import run_search  # host: torch, NNI

    settings = SearchSettings(
        trials=args.trials,
        population=args.population,
        sample_size=args.sample_size,
        seed=args.seed,
        way=args.way,
        shot=args.shot,
        query=args.query,
        episodes=args.episodes,
        split=args.split,
        split_dir=args.split_dir,
        concurrency=args.concurrency,
        budget_ms=args.budget_ms,
        budget_gflops=args.budget_gflops,
        table=args.latency_table,
        allow_foreign_table=args.allow_foreign_table,
        target=args.target,
        training_service=args.training_service,
        machines=args.machines,
        head=args.head,
        tau=args.tau,
        window=args.window,
        rescore_top=args.rescore_top,
        rescore_episodes=args.rescore_episodes,
        baseline=not args.no_baseline,
        threads=args.threads,
        port=args.port,
        device=args.device,
        progressive=args.progressive,
        verbose=args.verbose,
    )
    return emit(
        run_search(
            args.space, args.weights, args.data, args.out, settings, restriction_file=args.restriction
        ),
        args,
    )


def add(sub: argparse._SubParsersAction) -> None:
    S = SearchSettings
    p = sub.add_parser(
        "search",
        formatter_class=DefaultsFormatter,
        help="hardware-aware search over a trained supernet (NNI experiment, budget)",
        description="Search the (restricted) space of a trained supernet with NNI's RegularizedEvolution "
        "under "
        "a latency budget (a latency table's prediction) or a FLOPs budget, enforced as an NNI "
        "ExpressionConstraint. Every candidate inherits its weights from the supernet and is "
        "scored on the same fixed, seeded validation episodes. A random baseline of the same "
        "number of subnets under the same budget runs in the same command. Then the top "
        "--rescore-top of each are re-scored on --rescore-episodes other validation episodes; "
        "best.json is the evolution's best re-scored subnet, compared with the baseline's on "
        "those episodes (paired t-test). The head is the one the run trained through (run.json "
        "beside the weights) unless --head/--tau/--window say otherwise. Writes best.json, "
        "trials.csv, pareto.png (accuracy vs cost with 95%% CIs, Pareto front, budget line), "
        "search.json.",
    )
    p.add_argument("--space", required=True, help="space name or path")
    p.add_argument("--weights", required=True, help="training run folder (or supernet .safetensors)")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--out", required=True, help="output folder (new)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-ms", type=float, help="latency budget in ms (needs --latency-table)")
    budget.add_argument("--budget-gflops", type=float, help="FLOPs budget in G multiply-adds")
    p.add_argument("--latency-table", help="latency table (name or path) for --budget-ms")
    p.add_argument(
        "--allow-foreign-table",
        action="store_true",
        help="use a table made for another space or target (or a device that does not match its target) "
        "anyway",
    )
    p.add_argument("--target", help="the deployment target the search is for (export/NAME.yaml or a path); "
                   "the latency table must describe it (default: the target the table names). The machine "
                   "running the search need not be that device",)
    p.add_argument("--training-service", choices=("local", "remote"), default=default(S, "training_service"),
                   help="where NNI runs the trials: this machine, or the machines of --machines over SSH "
                   "(NNI's remote service)")
    p.add_argument("--machines", help="a remote search's machines (YAML: host, port, user, key_file, "
                   "python_path, gpu_indices, weights; see docs/search.md)")
    add_restriction_option(p, "a restriction file (default: the training run's restriction.json, if any)")
    p.add_argument("--trials", type=int, default=default(S, "trials"), help="evolution trials")
    p.add_argument("--population", type=int, default=default(S, "population"), help="evolution population")
    p.add_argument(
        "--sample-size", type=int, default=default(S, "sample_size"), help="tournament sample size"
    )
    p.add_argument(
        "--episodes", type=int, default=default(S, "episodes"), help="validation episodes per candidate"
    )
    p.add_argument("--way", type=int, default=default(S, "way"), help="classes per episode")
    p.add_argument("--shot", type=int, default=default(S, "shot"), help="support clips per class")
    p.add_argument("--query", type=int, default=default(S, "query"), help="queries per class")
    p.add_argument(
        "--split",
        default=default(S, "split"),
        choices=["train", "val", "test"],
        help="classes the candidates are scored on (default val; keep test for the end)",
    )
    p.add_argument("--split-dir", help="folder of split files (default DATA/splits)")
    p.add_argument(
        "--head",
        choices=list(HEADS),
        help="few-shot head (default: the one the run trained through, from its run.json)",
    )
    add_run_head_options(p, "the run's, from run.json beside the weights")
    p.add_argument(
        "--rescore-top",
        type=int,
        default=default(S, "rescore_top"),
        help="re-score this many best subnets of the evolution and of the random baseline",
    )
    p.add_argument(
        "--rescore-episodes",
        type=int,
        default=default(S, "rescore_episodes"),
        help="validation episodes of the re-scoring, other than the search's",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=default(S, "concurrency"),
        help="1: NNI's in-process engine; N > 1: NNI's local engine with N trial processes",
    )
    p.add_argument(
        "--port", type=int, default=default(S, "port"), help="port of NNI's manager (local engine)"
    )
    p.add_argument("--no-baseline", action="store_true", help="skip the random baseline")
    p.add_argument(
        "--progressive",
        action="store_true",
        help="also search in phases (Auto-TSNet order): the structure labels with every layer at its "
        "cheapest, then the per-layer ops inside the best structure, then the head counts, each an NNI "
        "experiment under the budget whose shortlist is re-scored on episodes of its own; --trials in "
        "all. best.json is its result, compared with the joint evolution's (same trial count) on the "
        "re-scoring episodes",
    )
    p.add_argument("--verbose", action="store_true",
                   help="also print NNI's own log lines (by default they go only to OUT/nni/nni.log)")
    p.add_argument("--threads", type=int, help="torch threads")
    add_device_option(p, "the trials embed their episodes (with --concurrency > 1 on a machine of "
                      "several GPUs, NNI gives each trial a GPU of its own)")
    p.add_argument(
        "--seed", type=int, default=default(S, "seed"), help="seed of the evolution, baseline and episodes"
    )
    add_json(p)
    p.set_defaults(func=_search)
