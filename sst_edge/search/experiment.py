"""`sst-edge search`: RegularizedEvolution over a trained supernet as an NNI experiment, under a budget.

NNI drives the search (strategy, constraint, engine); we decode the validation episodes once, score every
candidate on the same episodes with inherited weights, keep our own trial records, and run a random
baseline of the same size under the same budget in the same run.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..errors import SSTEdgeError
from ..fileio import atomic_write_json
from ..space.config import SpaceConfig, load_space
from ..space.model import Budget, SSTSpace
from ..space.subnet import make_subnet
from ..space.supernet import random_sample
from .report import best_record, write_csv, write_plot
from .trials import CONTEXT_FILE, EPISODES_FILE, CachedEpisodes, read_records, score, write_record

log = logging.getLogger(__name__)


@dataclass
class SearchSettings:
    trials: int = 40
    population: int = 12
    sample_size: int = 4
    seed: int = 0
    way: int = 5
    shot: int = 1
    query: int = 2
    episodes: int = 40
    split: str = "val"
    split_dir: str | None = None
    concurrency: int = 1
    budget_ms: float | None = None
    budget_gflops: float | None = None
    table: str | None = None
    allow_foreign_table: bool = False
    head: str = "alignment"
    baseline: bool = True
    threads: int | None = None
    port: int = 8745


def _budget(s: SearchSettings) -> Budget:
    if (s.budget_ms is None) == (s.budget_gflops is None):
        raise SSTEdgeError("give exactly one budget: --budget-ms (with --latency-table) or --budget-gflops")
    if s.budget_ms is not None and not s.table:
        raise SSTEdgeError("--budget-ms needs --latency-table (the table predicts each subnet's latency)")
    return Budget(gflops=s.budget_gflops, latency_ms=s.budget_ms, table=s.table,
                  allow_foreign_table=s.allow_foreign_table)


def _cost_of(sample: dict[str, Any], config: SpaceConfig, budget: Budget, table: Any) -> float:
    from ..cost.flops import predicted_cost

    if budget.latency_ms is not None:
        return table.predict_ms(sample)
    return predicted_cost(config, sample).gflops


def _prepare(config: SpaceConfig, weights: str | Path, data: str | Path, out: Path,
             s: SearchSettings) -> dict:
    """Decode the fixed validation episodes once and write the context the trials read."""
    from ..data.episodes import EpisodeDataset, episode_loader
    from ..device.datasets import load_splits
    from ..device.heads import DEFAULT_TAU, DEFAULT_WINDOW, HeadConfig
    from ..train.evaluate import load_supernet

    load_supernet(weights, config)  # fail early, with the file named, on weights of another space
    clips = load_splits(data, s.split_dir)[s.split]
    pre = config.eval_preprocess()
    ds = EpisodeDataset(clips, pre, way=s.way, shot=s.shot, query=s.query, episodes=s.episodes, seed=s.seed,
                        train=False)
    got = [(torch.cat([ep.support, ep.query]), ep.query_labels)
           for ep in tqdm(episode_loader(ds, 0), total=len(ds), desc="decode val episodes", unit="ep")]
    CachedEpisodes([g[0] for g in got], [g[1] for g in got], s.way, s.shot).save(out / EPISODES_FILE)
    ctx = {"space": str(config.source or config.name), "weights": str(Path(weights).resolve()),
           "table": str(Path(s.table).resolve()) if s.table and Path(s.table).exists() else s.table,
           "allow_foreign_table": s.allow_foreign_table, "threads": s.threads or 1,
           "head": HeadConfig(s.head, DEFAULT_TAU, DEFAULT_WINDOW).to_dict()}
    atomic_write_json(out / CONTEXT_FILE, ctx)
    return ctx


def _watch(out: Path, total: int, kind: str, stop: threading.Event) -> None:
    bar = tqdm(total=total, desc=f"search ({kind})", unit="trial")
    while not stop.is_set():
        done = sum(1 for r in read_records(out) if r["kind"] == kind)
        bar.n = min(done, total)
        best = max((r["accuracy"] for r in read_records(out) if r["kind"] == kind), default=None)
        if best is not None:
            bar.set_postfix(best_acc=f"{best:.3f}")
        bar.refresh()
        stop.wait(1.0)
    bar.n = min(sum(1 for r in read_records(out) if r["kind"] == kind), total)
    bar.close()


def _run_nni(config: SpaceConfig, keep: dict | None, budget: Budget, out: Path, s: SearchSettings) -> None:
    """The NNI experiment: RegularizedEvolution; in-process engine, or local trial processes."""
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperiment, NasExperimentConfig
    from nni.nas.strategy import RegularizedEvolution

    from .trials import nni_trial

    space = SSTSpace(config, keep, budget)
    evaluator = FunctionalEvaluator(nni_trial, workdir=str(out))
    strategy = RegularizedEvolution(population_size=s.population, sample_size=s.sample_size, seed=s.seed,
                                    dedup=True)
    if s.concurrency > 1:
        exp_config = NasExperimentConfig("ts", "simplified", "local")
        exp_config.trial_concurrency = s.concurrency
    else:
        exp_config = NasExperimentConfig("sequential", "raw", "local")
        exp_config.trial_concurrency = 1
    exp_config.max_trial_number = s.trials
    exp_config.experiment_working_directory = str((out / "nni").resolve())
    exp = NasExperiment(space, evaluator, strategy, exp_config)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(out, s.trials, "evolution", stop), daemon=True)
    watcher.start()
    try:
        ok = exp.run(port=s.port)
        if ok is False:
            raise SSTEdgeError(f"the NNI experiment failed; see its logs under {out / 'nni'}")
    finally:
        stop.set()
        watcher.join()
        exp.stop()  # always: a killed Python would leave NNI's manager running


def _run_baseline(config: SpaceConfig, keep: dict | None, budget: Budget, table: Any, out: Path,
                  s: SearchSettings) -> None:
    """The same number of uniformly random subnets under the same budget, scored the same way."""
    rng = random.Random(s.seed + 1)
    limit = budget.latency_ms if budget.latency_ms is not None else budget.gflops
    seen: set[tuple] = set()
    for _ in tqdm(range(s.trials), desc="search (random baseline)", unit="trial"):
        for _attempt in range(10_000):
            sample = random_sample(config, rng, keep)
            key = tuple(sample.values())
            if key not in seen and _cost_of(sample, config, budget, table) <= limit:
                break
        else:
            if not seen:
                raise SSTEdgeError("no random subnet meets the budget: raise it")
            # a small (shrunk) space holds fewer subnets under the budget than trials: all were scored
            tqdm.write(f"random baseline: only {len(seen)} distinct subnets meet the budget; all scored")
            return
        seen.add(key)
        metrics = score(sample, str(out))
        metrics["finished"] = time.time()
        write_record(str(out), "random", sample, metrics)


def _metrics_only(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "sample"}


def run_search(space: str | Path, weights: str | Path, data: str | Path, out: str | Path,
               settings: SearchSettings | None = None, restrict: str | Path | None = None) -> dict[str, Any]:
    """Search, then write best.json, trials.csv, pareto.png and search.json into `out`."""
    from ..space.report import extreme_sample, load_keep
    from ..train.evaluate import run_restriction

    s = settings or SearchSettings()
    config = load_space(space)
    budget = _budget(s)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any((out / "trials").glob("*.json")):
        raise SSTEdgeError("already holds a search (trials/); choose a new --out", out)
    keep = load_keep(restrict, config) if restrict else run_restriction(weights, config)
    table = None
    if budget.latency_ms is not None:
        from ..cost.latency import load_table

        table = load_table(s.table, config=config, allow_foreign=s.allow_foreign_table)
    limit = budget.latency_ms if table is not None else budget.gflops
    cheapest = _cost_of(extreme_sample(config, keep), config, budget, table)
    if cheapest > limit:
        unit = "ms" if table is not None else "GFLOPs"
        raise SSTEdgeError(f"the budget {limit} {unit} is below the cheapest subnet ({cheapest:.4g} {unit})")
    torch.set_num_threads(s.threads or 1)
    _prepare(config, weights, data, out, s)
    t0 = time.perf_counter()
    _run_nni(config, keep, budget, out, s)
    t_search = time.perf_counter() - t0
    if s.baseline:
        _run_baseline(config, keep, budget, table, out, s)
    records = read_records(out)
    unit_key = "latency_ms" if table is not None else "gflops"
    over = [r for r in records if r[unit_key] > limit + 1e-9]
    if over:
        log.warning("%d trials broke the budget", len(over))
    evo = [r for r in records if r["kind"] == "evolution"]
    rnd = [r for r in records if r["kind"] == "random"]
    if not evo:
        raise SSTEdgeError(f"the search finished no trial; see the NNI logs under {out / 'nni'}")
    best = best_record(evo, unit_key)
    summary = {
        "space": config.name, "weights": str(weights), "budget": asdict(budget), "settings": asdict(s),
        "restricted": keep is not None, "trials": len(evo), "over_budget": len(over),
        "best": _metrics_only(best),
        "random_best": _metrics_only(best_record(rnd, unit_key)) if rnd else None,
        "search_seconds": t_search,
    }
    metrics = {k: best[k] for k in ("accuracy", "ci95", "latency_ms", "gflops", "mparams")}
    metrics |= {"split": s.split, "way": s.way, "shot": s.shot, "episodes": s.episodes}
    make_subnet(config, best["sample"], metrics, keep).save(out / "best.json")
    write_csv(records, out / "trials.csv")
    write_plot(records, out / "pareto.png", unit_key, limit)
    atomic_write_json(out / "search.json", summary)
    return summary
