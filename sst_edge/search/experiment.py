"""`sst-edge search`: RegularizedEvolution over a trained supernet as an NNI experiment, under a budget.

NNI drives the search (strategy, constraint, engine); we decode the validation episodes once, score every
candidate on the same episodes with inherited weights, keep our own trial records, and run a random
baseline of the same size under the same budget in the same run.

The largest of many noisy estimates is biased upwards (a few dozen episodes give a 95% interval of several
points), so the search's scores only shortlist: the top `rescore_top` of the evolution and of the random
baseline are re-scored on `rescore_episodes` other validation episodes (same split and seed, episode
indices after the search's: episode i is a function of (seed, i) only, so the two sets are disjoint).
best.json is the evolution's best re-scored subnet; it is compared with the baseline's best re-scored one
on those same episodes by a paired t-test on the per-episode accuracies.

The head (kind, tau, window) is the one the run trained through (run.json beside the weights), unless
given; a difference from the run's is warned about and recorded in search.json and best.json.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from tqdm import tqdm

from .._nni import FunctionalEvaluator, NasExperiment, NasExperimentConfig, RegularizedEvolution, nni_log_to
from ..cost.flops import extreme_sample, predicted_cost
from ..cost.latency import load_table_for
from ..data.episodes import EpisodeDataset, episode_loader
from ..device.datasets import load_splits
from ..device.evaluation import confidence_interval
from ..errors import SSTEdgeError
from ..fileio import atomic_write_json, refuse_foreign, sha256_file, written_by_us
from ..space.config import Choices, SpaceConfig, load_space
from ..space.restriction import load_restriction, restricted_choices
from ..space.subnet import make_subnet
from ..space.supernet import freeze_subnet, random_sample
from ..train.artifacts import WEIGHTS_FILE, choose_head, load_supernet, run_restriction
from ..train.device import resolve_device
from ..train.evaluate import compare_embeddings
from .budget import Budget, BudgetedSpace
from .machines import check_machines, load_machines
from .progressive import PhaseResult, progressive_shortlist, run_phases
from .remote import CODE_DIR, RemoteResults, remote_service, stage_code, working_directory
from .report import SearchSummary, best_record, direction, write_csv, write_plot
from .settings import SearchSettings, check_settings
from .trials import CONTEXT_FILE, EPISODES_FILE, CachedEpisodes, nni_trial, read_records, score, write_record

log = logging.getLogger(__name__)
NNI_LOG = Path("nni") / "nni.log"  # NNI's log lines of every experiment of a search (unless --verbose)
LOST_TRIALS = Path("nni") / "lost-trials.json"  # a remote search's failed trials (search.json: lost_trials)
PROGRESSIVE = "progressive-"  # trial kinds of a progressive search's phases: progressive-structure, ...


def _budget(s: SearchSettings) -> Budget:
    if (s.budget_ms is None) == (s.budget_gflops is None):
        raise SSTEdgeError("give exactly one budget: --budget-ms (with --latency-table) or --budget-gflops")
    if s.budget_ms is not None and not s.table:
        raise SSTEdgeError("--budget-ms needs --latency-table (the table predicts each subnet's latency)")
    return Budget(gflops=s.budget_gflops, latency_ms=s.budget_ms, table=s.table,
                  allow_foreign_table=s.allow_foreign_table, target=s.target)


def _cost_of(sample: dict[str, Any], config: SpaceConfig, budget: Budget, table: Any) -> float:

    if budget.latency_ms is not None:
        return table.predict_ms(sample)
    return predicted_cost(config, sample).gflops


def _prepare(config: SpaceConfig, weights: str | Path, data: str | Path, out: Path,
             s: SearchSettings, head: dict[str, Any]) -> dict:
    """Decode the fixed validation episodes once and write the context the trials read."""

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
           "allow_foreign_table": s.allow_foreign_table, "target": s.target, "threads": s.threads or 1,
           "head": head, "device": s.device}
    atomic_write_json(out / CONTEXT_FILE, ctx)
    return ctx


def _watch(out: Path, total: int, kind: str, stop: threading.Event,
           sync: Callable[[], None] | None = None) -> None:
    bar = tqdm(total=total, desc=f"search ({kind})", unit="trial")
    while not stop.is_set():
        if sync is not None:  # a remote search: the records come from NNI's final metrics
            sync()
        accs = [r["accuracy"] for r in read_records(out) if r["kind"] == kind]
        bar.n = min(len(accs), total)
        best = max(accs, default=None)
        if best is not None:
            bar.set_postfix(best_acc=f"{best:.3f}")
        bar.refresh()
        stop.wait(1.0)
    bar.n = min(sum(1 for r in read_records(out) if r["kind"] == kind), total)
    bar.close()


def _run_nni(
    config: SpaceConfig, restriction: Choices | None, budget: Budget, out: Path, s: SearchSettings,
    kind: str = "evolution",
) -> None:
    """The NNI experiment: RegularizedEvolution; in-process engine, or local trial processes. Its trials
    write records of `kind` (the joint search's "evolution", or a progressive phase's)."""

    with nni_log_to(None if s.verbose else out / NNI_LOG):
        _run_experiment(config, restriction, budget, out, s, kind)


class _Evolution(RegularizedEvolution):
    """NNI's regularized evolution, which fails (max() of an empty population) when it breeds before any
    member of the initial population has a metric, as when a lost machine's trial ended first: it then
    draws a new member at random instead, and the search goes on with the machines left."""

    def new_individual(self) -> Any:
        if not self._population:
            return self.random()
        return super().new_individual()


def _run_experiment(config: SpaceConfig, restriction: Choices | None, budget: Budget, out: Path,
                    s: SearchSettings, kind: str) -> None:
    space = BudgetedSpace(config, restriction, budget)
    evaluator = FunctionalEvaluator(nni_trial, workdir=str(out), kind=kind)
    strategy = _Evolution(population_size=s.population, sample_size=s.sample_size, seed=s.seed,
                                    dedup=True)
    results = None
    if s.training_service == "remote":
        ms = load_machines(s.machines or "")
        exp_config = NasExperimentConfig("ts", "simplified", "remote")
        remote_service(exp_config, ms, resolve_device(s.device).type)
        exp_config.trial_concurrency = max(s.concurrency, len(ms.machines))
        evaluator = FunctionalEvaluator(nni_trial, workdir="", kind=kind, remote=True)
        results = RemoteResults(out, kind, ms)
    elif s.concurrency > 1:
        exp_config = NasExperimentConfig("ts", "simplified", "local")
        exp_config.trial_concurrency = s.concurrency
        if resolve_device(s.device).type == "cuda":
            # NNI gives each trial process a GPU of its own (CUDA_VISIBLE_DEVICES), as many at once as
            # there are GPUs; a GPU that shows a desktop may be used too
            exp_config.trial_gpu_number = 1
            exp_config.training_service.use_active_gpu = True
    else:
        exp_config = NasExperimentConfig("sequential", "raw", "local")
        exp_config.trial_concurrency = 1
    exp_config.max_trial_number = s.trials
    exp_config.experiment_working_directory = str((out / "nni").resolve())
    # a remote search's trial code is the staged folder: NNI uploads the current directory, no other
    def cwd() -> contextlib.AbstractContextManager:
        return working_directory(out / CODE_DIR) if results is not None else contextlib.nullcontext()

    with cwd():
        exp = NasExperiment(space, evaluator, strategy, exp_config)
    sync = (lambda: results.sync(exp.port, exp.url_prefix)) if results is not None else None
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(out, s.trials, kind, stop, sync), daemon=True)
    watcher.start()
    try:
        with cwd():
            ok = exp.run(port=s.port)
        if ok is None:  # NNI caught a Ctrl-C, stopped the experiment and returned: the user still wants out
            raise KeyboardInterrupt
        if ok is False and results is None:
            raise SSTEdgeError(f"the NNI experiment failed; see its logs under {out / 'nni'}")
    finally:
        stop.set()
        watcher.join()
        if sync is not None:
            sync()  # the last records, while NNI's manager still answers
            _save_lost(out, results.failed.values())
        exp.stop()  # always: a killed Python would leave NNI's manager running
        _kill_lost_managers(exp.id)


def _service_record(s: SearchSettings, machines: dict[str, dict[str, Any]] | None,
                    out: Path) -> dict[str, Any]:
    """Where the trials ran; for a remote search, each machine's check and the trials lost on the way."""
    if machines is None:
        return {"platform": "local"}
    recs = read_records(out)
    ran = dict(Counter(str(r.get("machine")) for r in recs))
    lost = lost_trials(out)
    return {"platform": "remote", "machines_file": str(s.machines), "machines": machines,
            "trials_by_host": ran, "lost_trials": lost,
            "note": (f"{len(lost)} trials failed (their machine lost, or a crash there): the result comes "
                     f"from the {len(recs)} that finished") if lost else None}


def _save_lost(out: Path, failed: Iterable[dict[str, Any]]) -> None:
    """A remote search's failed trials (their machine lost, or a crash there), for search.json."""
    atomic_write_json(out / LOST_TRIALS, lost_trials(out) + list(failed))


def lost_trials(out: Path) -> list[dict[str, Any]]:
    path = out / LOST_TRIALS
    return json.loads(path.read_text()) if path.exists() else []


def _kill_lost_managers(exp_id: str) -> None:
    """Kill and reap this process's NNI manager of experiment `exp_id` if it outlived `exp.stop()`.

    NNI loses the manager's handle when Ctrl-C (or any error) arrives while it starts the manager (inside
    Popen or before the REST server answers): its launcher then neither kills it nor hands it to `stop()`.
    Linux (/proc); elsewhere a no-op."""
    proc = Path("/proc")
    if not proc.is_dir():
        return
    for d in proc.iterdir():
        try:
            if not d.name.isdigit():
                continue
            if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) != os.getpid():  # its parent
                continue
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if any(b"nni_node" in c for c in cmd) and exp_id.encode() in cmd:
            with contextlib.suppress(OSError):
                os.kill(int(d.name), signal.SIGKILL)
                os.waitpid(int(d.name), 0)


def _run_baseline(
    config: SpaceConfig, restriction: Choices | None, budget: Budget, table: Any, out: Path, s: SearchSettings
) -> None:
    """The same number of uniformly random subnets under the same budget, scored the same way."""
    rng = random.Random(s.seed + 1)
    limit = budget.latency_ms if budget.latency_ms is not None else budget.gflops
    seen: set[tuple] = set()
    for _ in tqdm(range(s.trials), desc="search (random baseline)", unit="trial"):
        for _attempt in range(10_000):
            sample = random_sample(config, rng, restriction)
            key = tuple(sample.values())
            if key not in seen and _cost_of(sample, config, budget, table) <= limit:
                break
        else:
            if not seen:
                raise SSTEdgeError("no random subnet meets the budget: raise it")
            # a small (restricted) space holds fewer subnets under the budget than trials: all were scored
            tqdm.write(f"random baseline: only {len(seen)} distinct subnets meet the budget; all scored")
            return
        seen.add(key)
        metrics = score(sample, str(out))
        metrics["finished"] = time.time()
        write_record(str(out), "random", sample, metrics)


def _metrics_only(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "sample"}


def _key(sample: dict[str, Any]) -> tuple:
    return tuple(sorted(sample.items()))


def top_records(records: list[dict[str, Any]], k: int, cost_key: str) -> list[dict[str, Any]]:
    """The `k` best distinct subnets by search estimate (ties to the cheaper, then by the sample, so the
    order never depends on the order the records came in), best first."""
    ranked = sorted(records, key=lambda r: (-round(r["accuracy"], 9), r[cost_key], repr(_key(r["sample"]))))
    seen: set[tuple] = set()
    top = []
    for r in ranked:
        if _key(r["sample"]) not in seen:
            seen.add(_key(r["sample"]))
            top.append(r)
        if len(top) == k:
            break
    return top


def episode_sets(s: SearchSettings) -> dict[str, dict[str, Any]]:
    """Which validation episodes the search and the re-scoring use: episode i of a split is a function of
    (seed, i) alone, so index ranges that do not overlap are disjoint sets of episodes. A progressive
    search re-scores between its phases on a third set ("phase"), after the other two."""
    base = {"split": s.split, "seed": s.seed, "way": s.way, "shot": s.shot, "query": s.query}
    sets = {"search": {**base, "first": 0, "episodes": s.episodes},
            "rescore": {**base, "first": s.episodes, "episodes": s.rescore_episodes}}
    if s.progressive:
        sets["phase"] = {**base, "first": s.episodes + s.rescore_episodes, "episodes": s.rescore_episodes}
    return sets


def _rescore(
    config: SpaceConfig,
    weights: str | Path,
    data: str | Path,
    s: SearchSettings,
    head: Any,
    samples: list[dict[str, Any]],
    which: str = "rescore",
) -> np.ndarray:
    """Per-episode accuracies [len(samples), episodes] on the episode set `which` (episode_sets), each
    episode decoded once and every subnet (weights inherited from the supernet) scored on it."""

    supernet, _ = load_supernet(weights, config)
    device = resolve_device(s.device)
    subnets = [freeze_subnet(supernet, config, sample).to(device).eval() for sample in samples]
    e = episode_sets(s)[which]
    ds = EpisodeDataset(load_splits(data, s.split_dir)[s.split], config.eval_preprocess(), way=s.way,
                        shot=s.shot, query=s.query, episodes=e["episodes"], seed=e["seed"], train=False,
                        start=e["first"])
    return compare_embeddings(subnets, ds, [head], progress=True,
                              desc=f"re-score {len(samples)} subnets ({which} episodes)")[:, 0, :]


def paired_comparison(a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """Is `a` better than `b` on the same episodes? Two-sided paired t-test on per-episode accuracies,
    with the 95% interval of the mean difference."""

    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(d)
    mean = float(d.mean())
    p: float | None = None
    half: float | None = None  # undefined with fewer than 2 episodes
    if n >= 2:
        sd = float(d.std(ddof=1))
        if sd <= 1e-12:  # every episode differs by the same amount (often: the same subnet, 0)
            p, half = (1.0 if abs(mean) <= 1e-12 else 0.0), 0.0
        else:
            p = float(stats.ttest_rel(a, b).pvalue)
            half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    return {"test": "paired t-test on per-episode accuracies, two-sided", "episodes": n,
            "difference": mean, "difference_ci95": half, "p_value": p, "alpha": alpha,
            "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum()),
            "significant": bool(p is not None and p < alpha and mean > 0),  # one-sided: `a` is better
            "direction": direction(mean, p, alpha)}


def _table_record(table: Any, s: SearchSettings) -> dict[str, Any] | None:
    if table is None:
        return None
    path = Path(table.path)
    return {"name": s.table, "path": str(path.resolve()), "sha256": sha256_file(path),
            "space": table.space, "target": table.target.get("name"),
            "timed_on": {k: table.fingerprint.get(k) for k in ("cpu_model", "cpu_count", "gpu", "machine")},
            "foreign": list(table.foreign)}


def _run_progressive(config: SpaceConfig, restriction: Choices | None, budget: Budget, weights: str | Path,
                     data: str | Path, out: Path, s: SearchSettings, head: Any,
                     unit_key: str) -> list[PhaseResult]:
    """The phases of `search --progressive` (search/progressive.py), each its own NNI experiment."""

    def run_phase(name: str, phase_restr: dict[str, list], trials: int, seed: int) -> list[dict[str, Any]]:
        population = min(s.population, trials)
        sp = replace(s, trials=trials, population=population, sample_size=min(s.sample_size, population),
                     seed=seed)
        kind = f"{PROGRESSIVE}{name}"
        _run_nni(config, phase_restr, budget, out, sp, kind)
        return [r for r in read_records(out) if r["kind"] == kind]

    return run_phases(
        config, restricted_choices(config, restriction), extreme_sample(config, restriction), s.trials,
        s.seed, run_phase,
        lambda samples: _rescore(config, weights, data, s, head, samples, "phase"),
        lambda records: top_records(records, s.rescore_top, unit_key), unit_key)


SEARCH_FOLDER = written_by_us(  # what a search writes into its --out, and nothing else may be there
    {"best.json", "trials.csv", "pareto.png", "search.json", CONTEXT_FILE, EPISODES_FILE},
    {"trials", "nni", CODE_DIR})


def run_search(
    space: str | Path,
    weights: str | Path,
    data: str | Path,
    out: str | Path,
    settings: SearchSettings | None = None,
    restriction_file: str | Path | None = None,
) -> SearchSummary:
    """Search, re-score the best, then write best.json, trials.csv, pareto.png and search.json into `out`."""

    s = settings or SearchSettings()
    check_settings(s)
    resolve_device(s.device)  # a named error now, not in a trial
    config = load_space(space)
    budget = _budget(s)
    out = Path(out)
    refuse_foreign(out, SEARCH_FOLDER, "search folder")
    out.mkdir(parents=True, exist_ok=True)
    if any((out / "trials").glob("*.json")):
        raise SSTEdgeError("already holds a search (trials/); choose a new --out", out)
    choice = choose_head(weights, [s.head] if s.head else None, s.tau, s.window)
    head = choice.head
    restriction = (
        load_restriction(restriction_file, config).choices
        if restriction_file
        else run_restriction(weights, config)
    )
    table = None
    if budget.latency_ms is not None:
        table = load_table_for(s.table, config, s.target, s.allow_foreign_table)
    limit = budget.latency_ms if table is not None else budget.gflops
    cheapest = _cost_of(extreme_sample(config, restriction), config, budget, table)
    if cheapest > limit:
        unit = "ms" if table is not None else "GFLOPs"
        raise SSTEdgeError(f"the budget {limit} {unit} is below the cheapest subnet ({cheapest:.4g} {unit})")
    machines = None
    if s.training_service == "remote":  # every machine checked before anything is decoded or started
        ms = load_machines(s.machines or "")
        supernet_sha = sha256_file(Path(weights) / WEIGHTS_FILE)  # hashed once: the check and the trials'
        machines = check_machines(ms, weights, out / "nni" / "known_hosts", supernet_sha)
    torch.set_num_threads(s.threads or 1)
    ctx = _prepare(config, weights, data, out, s, head.to_dict())
    if machines is not None:
        stage_code(out, ctx, ms, weights, supernet_sha)
    unit_key = "latency_ms" if table is not None else "gflops"
    t0 = time.perf_counter()
    phases = (_run_progressive(config, restriction, budget, weights, data, out, s, head, unit_key)
              if s.progressive else None)
    t_progressive = time.perf_counter() - t0
    t0 = time.perf_counter()
    _run_nni(config, restriction, budget, out, s)
    t_search = time.perf_counter() - t0
    if s.baseline:
        _run_baseline(config, restriction, budget, table, out, s)
    records = read_records(out)
    over = [r for r in records if r[unit_key] > limit + 1e-9]
    if over:
        log.warning("%d trials broke the budget", len(over))
    evo = [r for r in records if r["kind"] == "evolution"]
    rnd = [r for r in records if r["kind"] == "random"]
    if not evo:
        raise SSTEdgeError(f"the search finished no trial; see the NNI logs under {out / 'nni'}")

    # Re-score the shortlist of both on other episodes: the search's own maximum is optimistic.
    t0 = time.perf_counter()
    shortlist = {"evolution": top_records(evo, s.rescore_top, unit_key),
                 "random": top_records(rnd, s.rescore_top, unit_key)}
    if phases is not None:
        by_key = {_key(r["sample"]): r for r in records if r["kind"].startswith(PROGRESSIVE)}
        shortlist["progressive"] = [by_key[_key(f["sample"])]
                                    for f in progressive_shortlist(phases, s.rescore_top, unit_key)]
    unique: dict[tuple, dict[str, Any]] = {}
    for recs in shortlist.values():
        for r in recs:
            unique.setdefault(_key(r["sample"]), r["sample"])
    keys = list(unique)
    per_episode = dict(zip(keys, _rescore(config, weights, data, s, head, [unique[k] for k in keys]),
                           strict=True))
    t_rescore = time.perf_counter() - t0
    episodes = episode_sets(s)

    def figures(r: dict[str, Any], kind: str) -> dict[str, Any]:
        acc = per_episode[_key(r["sample"])]
        return {"kind": kind, "sample": r["sample"],
                "search": {"accuracy": r["accuracy"], "ci95": r["ci95"], "episodes": s.episodes},
                "rescore": {"accuracy": float(acc.mean()), "ci95": confidence_interval(acc),
                            "episodes": len(acc)},
                **{k: r[k] for k in ("latency_ms", "gflops", "mparams")}}

    rescored = [figures(r, kind) for kind, recs in shortlist.items() for r in recs]

    def winner(kind: str) -> dict[str, Any] | None:
        cands = [f for f in rescored if f["kind"] == kind]
        return max(cands, key=lambda f: (round(f["rescore"]["accuracy"], 9), -f[unit_key])) if cands else None

    joint, rnd_best = winner("evolution"), winner("random")
    assert joint is not None
    best = winner("progressive") if phases is not None else joint
    if best is None:  # every phase was skipped or finished nothing: the joint search's result stands
        best = joint
    vs_joint = None
    if phases is not None:
        vs_joint = paired_comparison(per_episode[_key(best["sample"])], per_episode[_key(joint["sample"])])
        vs_joint["same_subnet"] = _key(best["sample"]) == _key(joint["sample"])
        vs_joint["trials"] = {"progressive": sum(p.trials for p in phases), "joint": len(evo)}
    comparison = None
    if rnd_best is not None:
        comparison = paired_comparison(per_episode[_key(best["sample"])],
                                       per_episode[_key(rnd_best["sample"])])
        comparison["same_subnet"] = _key(best["sample"]) == _key(rnd_best["sample"])
        comparison["note"] = ("each side is the best of its shortlist on these episodes, so both figures "
                              "carry the same (small) selection bias")
    table_rec = _table_record(table, s)
    head_rec = choice.to_dict()
    summary = {
        "space": config.name,
        "weights": str(weights),
        "budget": asdict(budget),
        "settings": asdict(s),
        "restricted": restriction is not None,
        "trials": len(evo),
        "over_budget": len(over),
        "head": head_rec,
        "latency_table": table_rec,
        "training_service": _service_record(s, machines, out),
        "episodes": episodes,
        "best": _metrics_only(best),
        "random_best": _metrics_only(rnd_best) if rnd_best else None,
        "search_best": _metrics_only(best_record(evo, unit_key)),
        "random_search_best": _metrics_only(best_record(rnd, unit_key)) if rnd else None,
        "comparison": comparison,
        "rescored": rescored,
        "progressive": None if phases is None else {
            "phases": [p.to_dict() for p in phases], "trials": sum(p.trials for p in phases),
            "joint_best": _metrics_only(joint), "vs_joint": vs_joint, "seconds": t_progressive},
        "search_seconds": t_search,
        "rescore_seconds": t_rescore,
    }
    r = best["rescore"]
    metrics = {"accuracy": r["accuracy"], "ci95": r["ci95"], "episodes": r["episodes"],
               **{k: best[k] for k in ("latency_ms", "gflops", "mparams")},
               "split": s.split, "way": s.way, "shot": s.shot, "query": s.query,
               "search": {**best["search"], "first_episode": episodes["search"]["first"], "seed": s.seed},
               "rescore": {**r, "first_episode": episodes["rescore"]["first"], "seed": s.seed,
                           "among": len(shortlist["evolution"])},
               "latency_table": table_rec, "head": head.to_dict(), "head_source": head_rec,
               "vs_random": comparison, "found_by": "progressive" if phases is not None else "evolution",
               **({"vs_joint": vs_joint} if vs_joint is not None else {})}
    make_subnet(config, best["sample"], metrics, restriction).save(out / "best.json")
    write_csv(records, out / "trials.csv", rescored)
    write_plot(records, out / "pareto.png", unit_key, limit, rescored, best)
    atomic_write_json(out / "search.json", summary)
    return SearchSummary(summary, out)
