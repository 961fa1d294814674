"""Measure a latency table (`sst-edge profile`) and validate it against whole subnets.

Every part is run as deployment runs it: exported with `deploy.onnx_export` (same exporter, opset and
precision step) and timed in an ONNX Runtime session made by `make_session` from the target (provider,
threads, graph optimisation); or, as a second backend, in PyTorch eager with the target's threads and
device. Batch 1: latencies are per clip. Exports all happen before any timing (the exporter's threads must
be idle), then `timing.time_items` times the parts, and the whole subnets that validate them, in one
pool of interleaved rounds, one session at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..deploy.onnx_export import export_for_target, make_session
from ..deploy.targets import BACKENDS, Target, load_target
from ..errors import SSTEdgeError
from ..fileio import utc_now
from ..space.config import SpaceConfig, load_space
from .background import BackgroundLog
from .fingerprint import fingerprint
from .latency import LatencyTable, StageEntry, check_table, read_table, target_record
from .parts import Part, block_key, fixed_keys, space_parts
from .timing import CLOCKS, Opener, Run, Timing, TimingPolicy, time_items
from .validation import MIN_AFFINE, plot_validation, summarize

EXPORTER = "torch.onnx.export(dynamo=False), TorchScript exporter"



# --------------------------------------------------------------------------------------------- runners
def ort_opener(path: Path, target: Target, x: np.ndarray) -> Opener:
    @contextlib.contextmanager
    def opener() -> Iterator[Run]:
        box = {"sess": make_session(path, target)}
        feeds = {box["sess"].get_inputs()[0].name: x}

        def run() -> object:
            return box["sess"].run(None, feeds)

        try:
            yield run
        finally:
            box.clear()  # drop the session now: only one may exist at a time

    return opener


def _torch_device(target: Target) -> torch.device:
    if not target.uses_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SSTEdgeError(f"target '{target.name}' runs on a GPU, and torch sees no CUDA device",
                           target.source or None)
    return torch.device("cuda")


def torch_opener(module: nn.Module, target: Target, x: torch.Tensor) -> Opener:
    device = _torch_device(target)
    dtype = torch.float16 if target.precision == "fp16" else torch.float32

    @contextlib.contextmanager
    def opener() -> Iterator[Run]:
        m = module.to(device=device, dtype=dtype).eval()
        xi = x.to(device=device, dtype=dtype)
        sync = torch.cuda.synchronize if device.type == "cuda" else None

        def run() -> object:
            with torch.inference_mode():
                y = m(xi)
            if sync is not None:
                sync()
            return y

        try:
            yield run
        finally:
            module.to("cpu")

    return opener


def _check_backend(target: Target, backend: str) -> None:
    if backend not in BACKENDS:
        raise SSTEdgeError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
    if backend == "torch" and target.precision == "int8":
        raise SSTEdgeError(f"target '{target.name}' is int8, which the torch backend does not run "
                           "(profile it with --backend onnxruntime)", target.source or None)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not enabled, leave=True, dynamic_ncols=True)


def timed(openers: dict[str, Opener], policy: TimingPolicy, seed: int, desc: str,
           progress: bool) -> tuple[dict[str, Timing], BackgroundLog]:
    bar = _bar(len(openers) * policy.rounds, desc, progress)

    def grow(n: int) -> None:
        bar.total += n
        bar.refresh()

    with bar:
        return time_items(openers, policy, seed=seed, progress=lambda _k: bar.update(1), extra_round=grow)


def resolve_clock(target: Target, clock: str = "auto") -> str:
    """`thread` CPU time for single-thread CPU targets (immune to other processes), else `wall`."""
    if clock == "auto":
        return "thread" if not target.uses_gpu and target.threads == 1 else "wall"
    if clock == "thread" and (target.uses_gpu or target.threads != 1):
        raise SSTEdgeError(f"the thread clock needs a one-thread CPU target; '{target.name}' has "
                           f"{target.threads} thread(s) on {target.device}: use the wall clock")
    if clock not in CLOCKS:
        raise SSTEdgeError(f"unknown clock {clock!r} (known: auto, {', '.join(CLOCKS)})")
    return clock


def _prepare(items: list[tuple[str, nn.Module, tuple[int, ...]]], target: Target, backend: str,
             workdir: Path, seed: int, bar: Any) -> dict[str, Opener]:
    """Export (ORT) or keep (torch) each module and make its opener. Inputs are seeded random normals."""
    gen = torch.Generator().manual_seed(seed)
    openers: dict[str, Opener] = {}
    for key, module, shape in items:
        x = torch.randn(shape, generator=gen)
        if backend == "onnxruntime":
            path = export_for_target(module, x, workdir / f"{key}.onnx", target)
            openers[key] = ort_opener(path, target, x.numpy())
        else:
            openers[key] = torch_opener(module, target, x)
        bar.update(1)
    return openers


# ------------------------------------------------------------------------------------------- profiling
def random_subnets(config: SpaceConfig, n: int, seed: int) -> list[dict[str, Any]]:
    """n distinct uniform draws from the space (fewer if the space is smaller than n)."""
    from ..space.supernet import random_sample

    rng = random.Random(seed)
    seen: set[tuple] = set()
    out: list[dict[str, Any]] = []
    for _ in range(100 * n):
        if len(out) == n:
            break
        s = random_sample(config, rng)
        key = tuple(s.items())
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def _subnet_key(i: int) -> str:
    return f"subnet{i:03d}"


def _time_pool(config: SpaceConfig, target: Target, backend: str, policy: TimingPolicy, seed: int,
               progress: bool, parts: list[Part],
               samples: list[Mapping[str, Any]]) -> tuple[dict[str, Timing], BackgroundLog]:
    """Export parts and whole subnets, then time them all in ONE interleaved pool.

    One pool, because the speed of this shared machine drifts by 5-10% over minutes (other processes
    compete for caches and memory bandwidth, which no clock excludes): parts timed first and subnets
    later would compare two machine states, not a sum with a whole.
    """
    from ..space.model import SSTSpace

    with torch_threads(target.threads), tempfile.TemporaryDirectory(prefix="sst-profile-") as tmp:
        bar = _bar(len(parts) + len(samples), f"export {config.name}", progress)
        with bar:
            openers = _prepare([(p.key, p.module, p.input_shape) for p in parts], target, backend,
                               Path(tmp), seed, bar)
            if samples:
                space = SSTSpace(config)
                for i, sample in enumerate(samples):
                    sub = space.freeze(dict(sample)).eval()
                    openers.update(_prepare([(_subnet_key(i), sub, config.input_shape(1))], target, backend,
                                            Path(tmp), seed + 1 + i, bar))
                del space
        what = " + ".join(x for x in (f"{len(parts)} parts" if parts else "",
                                       f"{len(samples)} subnets" if samples else "") if x)
        return timed(openers, policy, seed, f"time {what} on {target.name}/{backend}", progress)


def _table_from(config: SpaceConfig, target: Target, backend: str, policy: TimingPolicy, seed: int,
                parts: list[Part], timings: Mapping[str, Timing], duration_s: float,
                background: BackgroundLog) -> LatencyTable:
    by_key = {p.key: p for p in parts}
    fixed = {k: (list(by_key[k].input_shape), timings[k]) for k in fixed_keys(config)}
    stages = []
    for s, st in enumerate(config.stages, 1):
        blocks = {op: {h: timings[block_key(s, op, h)] for h in config.heads} for op in config.ops}
        shape = next(p.input_shape for p in parts if p.stage == s)
        stages.append(StageEntry(s, st.depth, list(shape), blocks))
    settings = {"policy": policy.to_dict(), "batch": 1, "seed": seed, "duration_s": round(duration_s, 1),
                "background": background.to_dict()}
    if backend == "onnxruntime":
        settings.update({"exporter": EXPORTER, "opset": target.opset, "dynamic_batch": target.dynamic_batch})
    return LatencyTable(space=config.name, space_hash=config.hash, target=target_record(target),
                        backend=backend, created=utc_now(), fingerprint=fingerprint(target, backend),
                        timing=settings, fixed=fixed, stages=stages)


def _record_validation(table: LatencyTable, samples: list[Mapping[str, Any]], measured: list[Timing],
                       seed: int, policy: TimingPolicy, duration_s: float, background: BackgroundLog | None,
                       plot_path: str | Path | None) -> dict[str, Any]:
    """Fit the correction, compute the figures, draw the plot, and store them in the table."""
    raw = [table.predict_ms(s, raw=True) for s in samples]
    med = [t.median_ms for t in measured]
    correction, result = summarize(raw, med)
    loo = result["loo"]
    record: dict[str, Any] = {
        "subnets": len(samples),
        "seed": seed,
        "created": utc_now(),
        "duration_s": round(duration_s, 1),
        # None: timed together with the parts (see timing.background); else the load while timing alone
        "background": None if background is None else background.to_dict(),
        "policy": policy.to_dict(),
        "correction_method": "measured ~= scale * sum + offset, least squares on relative error (scale "
                             f"only below {MIN_AFFINE} subnets); 'corrected_loo' figures are leave-one-out",
        "figures": result["figures"],
        "plot": None,
        "measurements": [
            {"predicted_raw_ms": round(r, 4),
             "predicted_loo_ms": None if loo is None else round(loo[i], 4),
             "measured": t.to_dict(), "sample": dict(s)}
            for i, (s, r, t) in enumerate(zip(samples, raw, measured, strict=True))],
    }
    table.correction = correction
    table.validation = record
    if plot_path is not None and len(samples) >= 2:
        record["plot"] = draw_validation(table, plot_path).name
    return record


def draw_validation(table: LatencyTable, path: str | Path) -> Path:
    """Draw (or redraw) a validated table's predicted-vs-measured PNG from the numbers it stores."""
    v = table.validation
    if not v or len(v.get("measurements", [])) < 2:
        raise SSTEdgeError("the table has no validation to plot (run profile --validate N)", table.path)
    ms = v["measurements"]
    loo = [m["predicted_loo_ms"] for m in ms]
    title = (f"{table.space} on {table.target_name} ({table.backend}), {len(ms)} subnets\n"
             f"{table.fingerprint.get('cpu_model')}, {table.fingerprint.get('threads')} thread(s)")
    raw = [m["predicted_raw_ms"] for m in ms]
    measured = [m["measured"]["median_ms"] for m in ms]
    return plot_validation(path, raw, measured, None if None in loo else loo, title, v["figures"])


def profile_space(config: SpaceConfig, target: Target, backend: str | None = None,
                  policy: TimingPolicy | None = None, seed: int = 0, progress: bool = True,
                  validate: int = 0, plot_path: str | Path | None = None) -> LatencyTable:
    """Time every fixed part and every (stage, op, heads) block of `config` on `target`.

    With `validate` = N, N random whole subnets are timed in the same interleaved rounds as the parts,
    and the table gets its correction and validation figures (and the plot at `plot_path`).
    """
    backend = backend or target.backend
    _check_backend(target, backend)
    if validate < 0:
        raise SSTEdgeError(f"--validate must be at least 0, got {validate}")
    policy = policy or TimingPolicy()
    policy = dataclasses.replace(policy, clock=resolve_clock(target, policy.clock))
    t0 = time.monotonic()
    parts: list[Part] = space_parts(config)
    samples = random_subnets(config, validate, seed) if validate else []
    timings, background = _time_pool(config, target, backend, policy, seed, progress, parts, samples)
    duration = time.monotonic() - t0
    table = _table_from(config, target, backend, policy, seed, parts, timings, duration, background)
    if samples:
        measured = [timings[_subnet_key(i)] for i in range(len(samples))]
        _record_validation(table, samples, measured, seed, policy, duration, None, plot_path)
    return table


def validate_table(table: LatencyTable, config: SpaceConfig, target: Target, n: int, seed: int = 0,
                   policy: TimingPolicy | None = None, progress: bool = True,
                   plot_path: str | Path | None = None) -> dict[str, Any]:
    """Measure n random subnets of an existing table end to end; store the correction and figures.

    The parts were timed earlier, maybe under another machine load: on a shared machine prefer
    `profile --validate N`, which times parts and subnets together. Returns the validation record.
    """
    if n < 1:
        raise SSTEdgeError(f"--validate needs at least 1 subnet, got {n}")
    _check_backend(target, table.backend)
    # Whole subnets are timed on the clock the parts were timed on, whatever `policy` says.
    clock = (table.timing.get("policy") or {}).get("clock", "wall")
    policy = dataclasses.replace(policy or TimingPolicy(), clock=clock)
    t0 = time.monotonic()
    samples = random_subnets(config, n, seed)
    timings, background = _time_pool(config, target, table.backend, policy, seed, progress, [], samples)
    measured = [timings[_subnet_key(i)] for i in range(len(samples))]
    return _record_validation(table, samples, measured, seed, policy, time.monotonic() - t0, background,
                              plot_path)


# ------------------------------------------------------------------------------------ verb-level calls
def default_table_path(config: SpaceConfig, target: Target, backend: str) -> Path:
    suffix = "" if backend == target.backend else f".{backend}"
    return Path("latency_tables") / f"{config.name}.{target.name}{suffix}.json"


def plot_path_for(table_path: Path) -> Path:
    return table_path.with_name(table_path.stem + ".validation.png")


def profile_to_file(space: str | Path | SpaceConfig, target: str | Path | Target,
                    out: str | Path | None = None, backend: str | None = None, validate: int = 0,
                    seed: int = 0, policy: TimingPolicy | None = None, overwrite: bool = False,
                    progress: bool = True) -> tuple[LatencyTable, Path]:
    """Profile a space on a target, optionally validate, and write the table (and plot) atomically."""
    config = space if isinstance(space, SpaceConfig) else load_space(space)
    tgt = load_target(target)
    backend = backend or tgt.backend
    path = Path(out) if out is not None else default_table_path(config, tgt, backend)
    if path.exists() and not overwrite:
        raise SSTEdgeError("exists already; pass --overwrite to replace it, or --table to re-validate it",
                           path)
    table = profile_space(config, tgt, backend, policy, seed, progress, validate, plot_path_for(path))
    return table, table.save(path)


def validate_file(table: str | Path, validate: int, space: str | Path | SpaceConfig | None = None,
                  target: str | Path | Target | None = None, allow_foreign: bool = False, seed: int = 0,
                  policy: TimingPolicy | None = None, out: str | Path | None = None,
                  progress: bool = True) -> tuple[LatencyTable, Path]:
    """Re-validate an existing table here (refused if foreign unless allowed) and write it back."""
    tab = read_table(table)  # checked below, against the space and target it names (or those given)
    config = space if isinstance(space, SpaceConfig) else load_space(space or tab.space)
    tgt = load_target(target or tab.target_name)
    check_table(tab, config, tgt, allow_foreign, backend=tab.backend)
    path = Path(out) if out is not None else tab.path
    validate_table(tab, config, tgt, validate, seed, policy, progress, plot_path_for(path))
    return tab, tab.save(path)


def describe(table: LatencyTable) -> str:
    """A plain-text summary: what was measured where, the parts, and the validation figures."""
    fp = table.fingerprint
    lines = [f"{table.path or '<memory>'}: space {table.space} ({table.space_hash}), target "
             f"{table.target_name}, backend {table.backend}, created {table.created}",
             f"  device: {fp.get('cpu_model')}, {fp.get('cpu_count')} CPUs"
             + (f", GPU {fp['gpu']}" if fp.get("gpu") else "")
             + f"; {fp.get('execution_provider')}, {fp.get('precision')}, {fp.get('threads')} thread(s)",
             f"  fixed parts {table.fixed_ms:.3f} ms: "
             + ", ".join(f"{k} {t.median_ms:.3f}" for k, (_, t) in table.fixed.items())]
    for st in table.stages:
        cells = ", ".join(f"{op}/{h} {t.median_ms:.3f}"
                          for op, hs in st.blocks.items() for h, t in hs.items())
        lines.append(f"  stage {st.stage} (x{st.depth}, input {st.input_shape}): {cells}")
    for what, bg in (("parts", table.timing.get("background")),
                     ("validation", (table.validation or {}).get("background"))):
        if bg and bg.get("rounds"):
            warn = bg["disturbed"] > 0.05 * bg["rounds"]
            lines.append(f"  background load while timing {what}: mean {bg['mean_cores']:.2f} cores, max "
                         f"{bg['max_cores']:.2f}; {bg['redone']} of {bg['rounds']} rounds redone, "
                         f"{bg['disturbed']} kept disturbed (> {bg['threshold_cores']} cores)"
                         + ("  <- disturbed: re-run on a quiet machine" if warn else ""))
    if table.correction:
        c = table.correction
        lines.append(f"  correction ({c.kind}, {c.fitted_on} subnets): measured = {c.scale:.4f} x sum "
                     f"{c.offset_ms:+.3f} ms")
    if table.validation:
        for name, f in table.validation.get("figures", {}).items():
            lines.append(f"  {name:>20}: within 5% {f['within_5pct'] * 100:5.1f}%, within 10% "
                         f"{f['within_10pct'] * 100:5.1f}%, RMSPE {f['rmspe_pct']:.2f}%, mean error "
                         f"{f['mean_error_pct']:+.2f}%, Kendall tau {f['kendall_tau']:.3f}")
    else:
        lines.append("  not validated (run `sst-edge profile --table ... --validate N`)")
    if table.foreign:
        lines.append("  FOREIGN: " + "; ".join(table.foreign))
    return "\n".join(lines)


def run_profile(space: str | None = None, target: str | None = None, table: str | None = None,
                out: str | None = None, backend: str | None = None, validate: int = 0, seed: int = 0,
                rounds: int = 8, clock: str = "auto", quick: bool = False, overwrite: bool = False,
                allow_foreign: bool = False, progress: bool = True) -> LatencyTable:
    """The `profile` verb: measure a new table (--space, --target), or check or re-validate one (--table)."""
    if rounds < 1:
        raise SSTEdgeError(f"--rounds must be at least 1, got {rounds}")
    if validate < 0:
        raise SSTEdgeError(f"--validate must be at least 0, got {validate}")
    policy = TimingPolicy.quick() if quick else TimingPolicy(rounds=rounds, max_rounds=rounds + 2)
    policy = dataclasses.replace(policy, clock=clock)
    if table is None:
        if space is None or target is None:
            raise SSTEdgeError("give --space and --target to measure a table, or --table to check one")
        tab, _ = profile_to_file(space, target, out, backend, validate, seed, policy, overwrite, progress)
        return tab
    if backend is not None:
        raise SSTEdgeError("--backend is for measuring a new table; a table is validated on its own backend")
    if validate:
        tab, _ = validate_file(table, validate, space, target, allow_foreign, seed, policy, out, progress)
        return tab
    tab = read_table(table)
    config = load_space(space or tab.space)
    return check_table(tab, config, load_target(target or tab.target_name), allow_foreign, tab.backend)
