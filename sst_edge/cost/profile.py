"""Measure a latency table (`sst-edge profile`) and validate it against whole subnets.

Every part is run as deployment runs it: exported with `cost.onnx_export` (same exporter, opset and
precision step) and timed in an ONNX Runtime session made by `make_session` from the target (provider,
threads, graph optimisation); or, as a second backend, in PyTorch eager with the target's threads and
device. Batch 1: latencies are per clip.

ONNX Runtime profiling is three steps, so a device without torch can be profiled (nn-Meter style):
`write_bundle` exports every part and validation subnet into a folder with a manifest (host), then
`device.bundle.run_bundle` times them all in one pool of interleaved rounds, one session at a time
(device), and `table_from_bundle` builds the table (host). The one-machine profile runs the same three
steps in a temporary folder, so there is one timing path.
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

import torch
from torch import nn

from ..device.background import BackgroundLog
from ..device.bundle import (
    FILE_BACKENDS,
    FORMAT,
    MANIFEST,
    TIMINGS,
    TRT_CACHE_DIR,
    VERSION,
    Bundle,
    BundleItem,
    count_items,
    file_backend,
    make_input,
    make_policy,
    ort_opener,  # noqa: F401  (re-exported: deploy.export and bench/export.py time ONNX files with it)
    parse_policy,
    progress_bar,
    read_bundle,
    read_timings,
    resolve_clock,
    run_bundle,
    timed,
)
from ..device.fingerprint import device_fingerprint, device_mismatches, fingerprint, library_versions
from ..device.targets import BACKENDS, Target, load_target
from ..device.timing import Opener, Run, Timing, TimingPolicy
from ..errors import SSTEdgeError
from ..fileio import atomic_write_json, refuse_foreign, sha256_file, utc_now, written_by_us
from ..result import Report
from ..space.config import SpaceConfig, load_space
from ..space.model import SSTSpace
from ..space.supernet import random_sample
from .latency import LatencyTable, StageEntry, check_table, fixed_keys, read_table, target_record
from .onnx_export import export_for_target
from .parts import Part, space_parts, stage_block_keys
from .validation import MIN_AFFINE, plot_validation, summarize

EXPORTER = "torch.onnx.export(dynamo=False), TorchScript exporter"


# --------------------------------------------------------------------------------------------- runners
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
    if backend != target.backend and "openvino" in (backend, target.backend):
        raise SSTEdgeError(f"target '{target.name}' runs on {target.backend}: profile it with --backend "
                           f"{target.backend} (or none), or choose an {backend} target",
                           target.source or None)
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


# ------------------------------------------------------------------------------------------ subnets
def random_subnets(config: SpaceConfig, n: int, seed: int) -> list[dict[str, Any]]:
    """n distinct uniform draws from the space (fewer if the space is smaller than n)."""

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


def _check_validate(validate: int) -> None:
    if validate < 0:
        raise SSTEdgeError(f"--validate must be at least 0, got {validate}")


def _resolved(policy: TimingPolicy | None, target: Target) -> TimingPolicy:
    policy = policy or TimingPolicy()
    return dataclasses.replace(policy, clock=resolve_clock(target, policy.clock))


# key, kind ("part" or "subnet"), module, input shape, sample (subnets only)
Module = tuple[str, str, nn.Module, tuple[int, ...], dict[str, Any] | None]


def _modules(config: SpaceConfig, parts: list[Part], samples: list[Mapping[str, Any]]) -> Iterator[Module]:
    """Every part, then every whole subnet (built only when asked for: the full space is slow to build)."""
    for p in parts:
        yield p.key, "part", p.module, tuple(p.input_shape), None
    if samples:

        space = SSTSpace(config)
        for i, sample in enumerate(samples):
            module = space.freeze(dict(sample)).eval()
            yield _subnet_key(i), "subnet", module, config.input_shape(1), dict(sample)


# ------------------------------------------------------------------------------------- bundle (host)
def _export_item(directory: Path, target: Target, m: Module, input_seed: int) -> BundleItem:
    key, kind, module, shape, sample = m
    x = torch.from_numpy(make_input(shape, input_seed))
    f = export_for_target(module, x, directory / f"{key}.onnx", target)
    return BundleItem(key, kind, f.name, sha256_file(f), f.stat().st_size, shape, input_seed, sample)


def _manifest(config: SpaceConfig, target: Target, seed: int, policy: TimingPolicy,
              items: list[BundleItem]) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "created": utc_now(),
            "space": config.name, "space_hash": config.hash, "target": target_record(target),
            "backend": file_backend(target), "seed": seed, "policy": policy.to_dict(),
            "exporter": EXPORTER, "opset": target.opset, "dynamic_batch": target.dynamic_batch,
            "host_versions": library_versions(),
            "inputs": "np.random.default_rng(input_seed).standard_normal(input_shape, dtype=np.float32)",
            "items": [it.to_dict() for it in items]}


# what a bundle folder holds: its manifest, the device's timings and one ONNX file per part or subnet
BUNDLE_FOLDER = written_by_us({MANIFEST, TIMINGS}, {TRT_CACHE_DIR},
                              pattern=r"(embed|head|downsample\d+|s\d+(\.big)?\.[a-z]+(\.h\d+)?|subnet\d{3,})"
                                      r"(\.fp32)?\.onnx")


def write_bundle(config: SpaceConfig, target: Target, directory: str | Path, parts: list[Part],
                 samples: list[Mapping[str, Any]], seed: int = 0, policy: TimingPolicy | None = None,
                 progress: bool = True, overwrite: bool = False) -> Path:
    """Export `parts` and whole `samples` as `target` deploys them into `directory`, then its manifest.

    The manifest is written last (atomically) and an old one removed first, so a folder whose export
    failed halfway is no bundle at all rather than one whose files do not match. Item i's input seed is
    seed + i. Returns the manifest's path.
    """
    policy = _resolved(policy, target)  # a clock the target cannot use fails now, not after the export
    directory = Path(directory)
    manifest = directory / MANIFEST
    refuse_foreign(directory, BUNDLE_FOLDER, "profile bundle folder")
    if manifest.exists() and not overwrite:
        raise SSTEdgeError("a profile bundle is here already; pass --overwrite to replace it", directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in (manifest, directory / TIMINGS):
        old.unlink(missing_ok=True)
    items: list[BundleItem] = []
    bar = progress_bar(len(parts) + len(samples), f"export {config.name} for {target.name}", progress)
    with torch_threads(target.threads), bar:
        for i, m in enumerate(_modules(config, parts, samples)):
            items.append(_export_item(directory, target, m, seed + i))
            bar.update(1)
    return atomic_write_json(manifest, _manifest(config, target, seed, policy, items))


def bundle_to_dir(space: str | Path | SpaceConfig, target: str | Path | Target, directory: str | Path,
                  validate: int = 0, seed: int = 0, policy: TimingPolicy | None = None,
                  overwrite: bool = False, progress: bool = True, backend: str | None = None) -> Path:
    """`profile --bundle`: every part of the space and `validate` random subnets, for the device to time."""
    config = space if isinstance(space, SpaceConfig) else load_space(space)
    tgt = load_target(target)
    if (backend or file_backend(tgt)) != file_backend(tgt):
        raise SSTEdgeError(f"a bundle is timed by {file_backend(tgt)} on the device; --backend {backend} "
                           "profiles on "
                           "this machine only (drop --bundle)")
    _check_validate(validate)
    samples = random_subnets(config, validate, seed) if validate else []
    return write_bundle(config, tgt, directory, space_parts(config), samples, seed, policy, progress,
                        overwrite)


def describe_bundle(directory: str | Path) -> str:
    """What `profile --bundle` prints: what the bundle holds and the next two steps."""
    b = read_bundle(directory, check_files=False)
    size = sum(it.bytes for it in b.items) / 1e6
    what = count_items(len(b.item_keys("part")), len(b.item_keys("subnet")))
    return (f"{b.manifest_path}: {what} of {b.doc['space']} "
            f"for {b.target.name} ({size:.1f} MB, seed {b.seed}, {b.policy.rounds} rounds, "
            f"{b.policy.clock} clock)\n"
            f"  next: copy {b.directory} to the device, run `sst-edge profile --run-bundle {b.directory}` "
            f"there (ONNX Runtime and numpy only), copy it back and run "
            f"`sst-edge profile --from-bundle {b.directory}` here")


# ------------------------------------------------------------------------------------- tables (host)
def _table_from(config: SpaceConfig, target: Target, backend: str, policy: TimingPolicy, seed: int,
                shapes: Mapping[str, tuple[int, ...]], timings: Mapping[str, Timing], duration_s: float,
                background: Mapping[str, Any], fp: Mapping[str, Any],
                extra: Mapping[str, Any] | None = None) -> LatencyTable:
    """The table from per-key timings and input shapes; `fp` is the fingerprint of the timing device."""
    fixed = {k: (list(shapes[k]), timings[k]) for k in fixed_keys(config)}
    stages = []
    for s, st in enumerate(config.stages, 1):
        blocks: dict[str, dict[int, Timing]] = {}
        for op, h, key in stage_block_keys(config, s):  # headless ops: one timing under every heads value
            blocks.setdefault(op, {})[h] = timings[key]
        shape = shapes[stage_block_keys(config, s)[0][2]]
        stages.append(StageEntry(s, st.depth, list(shape), blocks))
    settings = {"policy": policy.to_dict(), "batch": 1, "seed": seed, "duration_s": round(duration_s, 1),
                "background": dict(background), **(extra or {})}
    return LatencyTable(space=config.name, space_hash=config.hash, target=target_record(target),
                        backend=backend, created=utc_now(), fingerprint=dict(fp), timing=settings,
                        fixed=fixed, stages=stages)


def _record_validation(table: LatencyTable, samples: list[Mapping[str, Any]], measured: list[Timing],
                       seed: int, policy: TimingPolicy, duration_s: float,
                       background: Mapping[str, Any] | None, plot_path: str | Path | None) -> dict[str, Any]:
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
        "background": None if background is None else dict(background),
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


def _bundle_space(bundle: Bundle, space: str | Path | SpaceConfig | None) -> SpaceConfig:
    """The bundle's space, refused if its YAML changed since the bundle was written."""
    config = space if isinstance(space, SpaceConfig) else load_space(space or bundle.doc["space"])
    if config.name != bundle.doc["space"]:
        raise SSTEdgeError(f"the bundle was written for space '{bundle.doc['space']}', not '{config.name}'",
                           bundle.manifest_path)
    if config.hash != bundle.doc["space_hash"]:
        raise SSTEdgeError(f"space '{config.name}' has hash {config.hash} now, the bundle was written for "
                           f"{bundle.doc['space_hash']}: the space YAML changed; write and time a new bundle",
                           bundle.manifest_path)
    return config


def _part_keys(config: SpaceConfig) -> list[str]:
    blocks = list(dict.fromkeys(key for s in range(1, len(config.stages) + 1)
                                for _, _, key in stage_block_keys(config, s)))
    return fixed_keys(config) + blocks


def _bundle_record(bundle: Bundle, doc: Mapping[str, Any]) -> dict[str, Any]:
    """Where a --from-bundle table's numbers came from (describe() prints it)."""
    return {"dir": str(bundle.directory), "manifest_sha256": bundle.sha256, "timed": doc.get("created"),
            "duration_s": doc.get("duration_s")}


def table_from_bundle(bundle: Bundle | str | Path, space: str | Path | SpaceConfig | None = None,
                      plot_path: str | Path | None = None, duration_s: float | None = None,
                      record_source: bool = True) -> LatencyTable:
    """The table from a bundle and the timings.json its device wrote, with that device's fingerprint.

    Never refused for having run on another machine (that is the point of a bundle); the table is then
    foreign on this host, which `describe` says and `check_table` enforces where it is used.
    """
    bundle = bundle if isinstance(bundle, Bundle) else read_bundle(bundle, check_files=False)
    doc, timings = read_timings(bundle)
    config = _bundle_space(bundle, space)
    have = set(bundle.item_keys("part"))
    missing = [k for k in _part_keys(config) if k not in have]
    if missing:
        raise SSTEdgeError(f"the bundle lacks parts of space '{config.name}': {', '.join(missing)}",
                           bundle.manifest_path)
    problems: list[str] = []
    policy = parse_policy(doc["policy"], problems)
    if problems:
        raise SSTEdgeError("invalid timings", bundle.timings_path, problems)
    duration = float(doc.get("duration_s") or 0.0) if duration_s is None else duration_s
    extra = {k: bundle.doc.get(k) for k in ("exporter", "opset", "dynamic_batch")}
    if record_source:
        extra["bundle"] = _bundle_record(bundle, doc)
    table = _table_from(config, bundle.target, file_backend(bundle.target), policy, bundle.seed,
                        {it.key: it.input_shape for it in bundle.items}, timings, duration, doc["background"],
                        doc["fingerprint"], extra)
    subnets = [it for it in bundle.items if it.kind == "subnet"]
    if subnets:
        _record_validation(table, [it.sample or {} for it in subnets], [timings[it.key] for it in subnets],
                           bundle.seed, policy, duration, None, plot_path)
    return table


def _time_here(config: SpaceConfig, target: Target, parts: list[Part], samples: list[Mapping[str, Any]],
               seed: int, policy: TimingPolicy, progress: bool, directory: Path) -> Bundle:
    """Write a bundle into `directory` and time it on this machine: the one-machine ONNX Runtime path."""
    write_bundle(config, target, directory, parts, samples, seed, policy, progress)
    bundle = read_bundle(directory)
    with torch_threads(target.threads):  # the exporter's idle threads stay few while timing
        run_bundle(bundle, progress=progress)
    return bundle


# ------------------------------------------------------------------------------------- torch backend
def _time_torch(config: SpaceConfig, target: Target, policy: TimingPolicy, seed: int, progress: bool,
                parts: list[Part],
                samples: list[Mapping[str, Any]]) -> tuple[dict[str, Timing], BackgroundLog]:
    """Parts and whole subnets in PyTorch eager, in ONE interleaved pool (inputs as in a bundle).

    One pool, because a shared machine's speed drifts over minutes (other processes compete for caches
    and memory bandwidth, which no clock excludes): parts timed first and subnets later would compare two
    machine states, not a sum with a whole.
    """
    with torch_threads(target.threads):
        openers: dict[str, Opener] = {}
        bar = progress_bar(len(parts) + len(samples), f"prepare {config.name}", progress)
        with bar:
            for i, (key, _kind, module, shape, _s) in enumerate(_modules(config, parts, samples)):
                openers[key] = torch_opener(module, target, torch.from_numpy(make_input(shape, seed + i)))
                bar.update(1)
        what = count_items(len(parts), len(samples))
        return timed(openers, policy, seed, f"time {what} on {target.name}/torch", progress)


# ------------------------------------------------------------------------------------------- profiling
def profile_space(config: SpaceConfig, target: Target, backend: str | None = None,
                  policy: TimingPolicy | None = None, seed: int = 0, progress: bool = True,
                  validate: int = 0, plot_path: str | Path | None = None) -> LatencyTable:
    """Time every fixed part and every (stage, op, heads) block of `config` on `target`.

    With `validate` = N, N random whole subnets are timed in the same interleaved rounds as the parts,
    and the table gets its correction and validation figures (and the plot at `plot_path`).
    """
    backend = backend or target.backend
    _check_backend(target, backend)
    _check_validate(validate)
    policy = _resolved(policy, target)
    t0 = time.monotonic()
    parts: list[Part] = space_parts(config)
    samples = random_subnets(config, validate, seed) if validate else []
    if backend in FILE_BACKENDS:
        with tempfile.TemporaryDirectory(prefix="sst-profile-") as tmp:
            bundle = _time_here(config, target, parts, samples, seed, policy, progress, Path(tmp))
            return table_from_bundle(bundle, config, plot_path, time.monotonic() - t0, record_source=False)
    timings, background = _time_torch(config, target, policy, seed, progress, parts, samples)
    duration = time.monotonic() - t0
    table = _table_from(config, target, backend, policy, seed, {p.key: p.input_shape for p in parts}, timings,
                        duration, background.to_dict(), fingerprint(target, backend))
    if samples:
        measured = [timings[_subnet_key(i)] for i in range(len(samples))]
        _record_validation(table, samples, measured, seed, policy, duration, None, plot_path)
    return table


def _measure_subnets(config: SpaceConfig, target: Target, backend: str, samples: list[Mapping[str, Any]],
                     seed: int, policy: TimingPolicy, progress: bool) -> tuple[list[Timing], dict[str, Any]]:
    """Whole subnets alone, on either backend: their timings and the background-load record."""
    keys = [_subnet_key(i) for i in range(len(samples))]
    if backend in FILE_BACKENDS:
        with tempfile.TemporaryDirectory(prefix="sst-validate-") as tmp:
            bundle = _time_here(config, target, [], samples, seed, policy, progress, Path(tmp))
            doc, timings = read_timings(bundle)
            return [timings[k] for k in keys], doc["background"]
    timings, background = _time_torch(config, target, policy, seed, progress, [], samples)
    return [timings[k] for k in keys], background.to_dict()


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
    measured, background = _measure_subnets(config, target, table.backend, samples, seed, policy, progress)
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
    check_table(tab, config, tgt, allow_foreign, backend=tab.backend, retime=True)
    path = Path(out) if out is not None else tab.path
    validate_table(tab, config, tgt, validate, seed, policy, progress, plot_path_for(path))
    return tab, tab.save(path)


def from_bundle_to_file(directory: str | Path, space: str | Path | SpaceConfig | None = None,
                        out: str | Path | None = None, overwrite: bool = False) -> tuple[LatencyTable, Path]:
    """`profile --from-bundle`: the table of a bundle timed on its device, written atomically (and plot)."""
    bundle = read_bundle(directory, check_files=False)  # the ONNX files need not come back from the device
    config = _bundle_space(bundle, space)
    backend = file_backend(bundle.target)
    path = Path(out) if out is not None else default_table_path(config, bundle.target, backend)
    if path.exists() and not overwrite:
        raise SSTEdgeError("exists already; pass --overwrite to replace it", path)
    table = table_from_bundle(bundle, config, plot_path_for(path))
    return table, table.save(path)


def _measured_where(table: LatencyTable) -> str:
    """Where it was timed: a table from a bundle is usually measured on another machine (the device)."""
    fp = table.fingerprint
    src = table.timing.get("bundle")
    via = f", timed from bundle {src.get('dir')} on {src.get('timed')}" if isinstance(src, dict) else ""
    diff = device_mismatches(fp, device_fingerprint(uses_gpu=bool(fp.get("gpu"))))
    if not diff:
        return f"  measured on this machine (native here{via})"
    return (f"  measured on another machine{via} (it drives a search here as it is; re-timing it with "
            f"--validate needs that device): " + "; ".join(diff))


def describe(table: LatencyTable) -> str:
    """A plain-text summary: what was measured where, the parts, and the validation figures."""
    fp = table.fingerprint
    lines = [f"{table.path or '<memory>'}: space {table.space} ({table.space_hash}), target "
             f"{table.target_name}, backend {table.backend}, created {table.created}",
             f"  device: {fp.get('cpu_model')}, {fp.get('cpu_count')} CPUs"
             + (f", GPU {fp['gpu']}" if fp.get("gpu") else "")
             + f"; {fp.get('execution_provider')}, {fp.get('precision')}, {fp.get('threads')} thread(s)",
             _measured_where(table),
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


def _policy(rounds: int | None, clock: str, quick: bool) -> TimingPolicy:
    return make_policy(TimingPolicy(), rounds, clock, quick)


def write_bundle_verb(space: str | None, target: str | None, directory: str, validate: int = 0, seed: int = 0,
                      rounds: int | None = None, clock: str = "auto", quick: bool = False,
                      overwrite: bool = False, backend: str | None = None, progress: bool = True) -> Report:
    """`profile --bundle DIR`: write the bundle (the policy goes into its manifest); its manifest and
    summary."""
    if space is None or target is None:
        raise SSTEdgeError("--bundle needs --space and --target")
    policy = _policy(rounds, clock, quick)
    bundle_to_dir(space, target, directory, validate, seed, policy, overwrite, progress, backend)
    b = read_bundle(directory, check_files=False)
    return Report(describe_bundle(directory).split("\n"), dict(b.doc))


def table_report(table: LatencyTable) -> Report:
    """A table as a verb's result: its summary (`describe`) and its document."""
    return Report(describe(table).split("\n"), table.to_dict())


def run_profile(space: str | None = None, target: str | None = None, table: str | None = None,
                out: str | None = None, backend: str | None = None, validate: int = 0, seed: int = 0,
                rounds: int | None = None, clock: str = "auto", quick: bool = False, overwrite: bool = False,
                allow_foreign: bool = False, progress: bool = True,
                from_bundle: str | None = None) -> LatencyTable:
    """The `profile` verb: measure a new table (--space, --target), build one from a timed bundle
    (--from-bundle), or check or re-validate one (--table). Rounds default to 8 (+2 for unstable medians)."""
    _check_validate(validate)
    policy = _policy(rounds, clock, quick)
    if from_bundle is not None:
        tab, _ = from_bundle_to_file(from_bundle, space, out, overwrite)
        return tab
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
