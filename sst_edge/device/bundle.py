"""Timing a profile bundle on the device: ONNX files and a manifest in, `timings.json` out; no torch.

A device that cannot run the exporter (a Jetson with ONNX Runtime and numpy only) still has to be timed as
it deploys: the host writes every part and validation subnet as the target's ONNX file plus a manifest
(`bundle.json`, see `cost.profile.write_bundle`), the device times them here, and the host builds the
latency table from the result (nn-Meter splits its builder from its device backends the same way). The
one-machine `profile` goes through the same three steps, so there is one timing path.

Inputs are not shipped: each item's input is `np.random.default_rng(input_seed).standard_normal(shape)`,
so host and device make the same array from two numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import SSTEdgeError
from ..fileio import (
    JSON_MAX_BYTES,
    atomic_write_json,
    parse_json,
    read_bytes,
    read_json,
    sha256_bytes,
    sha256_file,
    utc_now,
)
from ..result import Report
from ..schema import HEX64, NONNEG_INT, POS_INT, TEXT, check, check_header, header_schema
from .background import BackgroundLog
from .fingerprint import fingerprint
from .session import make_session
from .targets import Target, parse_target
from .timing import CLOCKS, TIMING_SCHEMA, Opener, Run, Timing, TimingPolicy, time_items

FORMAT = "sst-edge/profile-bundle"
VERSION = 1
TIMINGS_FORMAT = "sst-edge/profile-timings"
TIMINGS_VERSION = 1
MANIFEST = "bundle.json"
TRT_CACHE_DIR = "tensorrt-cache"  # inside a bundle: TensorRT's engines of its files (profile --run-bundle)
TIMINGS = "timings.json"
BACKEND = "onnxruntime"  # a torch-free backend that times ONNX files; an OpenVINO target's is openvino
FILE_BACKENDS = ("onnxruntime", "openvino")
KINDS = ("part", "subnet")
ITEM_SCHEMA = {
    "type": "object", "required": ["key", "kind", "file", "sha256", "bytes", "input_shape", "input_seed"],
    "properties": {"key": {**TEXT, "minLength": 1, "maxLength": 200}, "kind": {"enum": list(KINDS)},
                   "file": {**TEXT, "minLength": 1}, "sha256": HEX64, "bytes": NONNEG_INT,
                   "input_shape": {"type": "array", "items": POS_INT, "minItems": 1},
                   "input_seed": NONNEG_INT, "sample": {"type": "object"}}}
MANIFEST_SCHEMA = {
    "type": "object", "required": ["format", "version", "space", "space_hash", "target", "backend", "seed",
                                   "policy", "items"],
    "properties": {**header_schema(FORMAT, VERSION), "space": {**TEXT, "maxLength": 200},
                   "space_hash": {**TEXT, "maxLength": 128},
                   "target": {"type": "object", "required": ["settings", "hash"]},
                   "backend": {"enum": list(FILE_BACKENDS)}, "seed": NONNEG_INT, "policy": {"type": "object"},
                   "items": {"type": "array", "minItems": 1, "items": ITEM_SCHEMA}}}
TIMINGS_SCHEMA = {
    "type": "object", "required": ["format", "manifest_sha256", "fingerprint", "policy", "background",
                                   "timings"],
    "properties": {**header_schema(TIMINGS_FORMAT, TIMINGS_VERSION), "manifest_sha256": HEX64,
                   "fingerprint": {"type": "object"}, "policy": {"type": "object"},
                   "background": {"type": "object"},
                   "timings": {"type": "object", "additionalProperties": TIMING_SCHEMA}}}


# ------------------------------------------------------------------------------------- shared helpers
def file_backend(target: Target) -> str:
    """What times a target's ONNX files: OpenVINO for an OpenVINO target, else ONNX Runtime."""
    return target.backend if target.backend in FILE_BACKENDS else BACKEND


def make_input(shape: tuple[int, ...] | list[int], seed: int) -> np.ndarray:
    """The input an item is timed on: host and device make the same array from (shape, seed)."""
    return np.random.default_rng(seed).standard_normal(tuple(shape), dtype=np.float32)


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


def make_policy(base: TimingPolicy, rounds: int | None = None, clock: str = "auto",
                quick: bool = False) -> TimingPolicy:
    """`base` with the command line's overrides: --quick, --rounds R (R + 2 at most), --clock."""
    if rounds is not None and rounds < 1:
        raise SSTEdgeError(f"--rounds must be at least 1, got {rounds}")
    policy = dataclasses.replace(TimingPolicy.quick(), clock=base.clock) if quick else base
    if rounds is not None:
        policy = dataclasses.replace(policy, rounds=rounds, max_rounds=rounds + 2)
    if clock != "auto":
        policy = dataclasses.replace(policy, clock=clock)
    return policy


def ort_opener(path: Path, target: Target, x: np.ndarray, trt_cache: Path | None = None) -> Opener:
    """Opens one session per round (ONNX Runtime's, or OpenVINO's for an OpenVINO target) and drops it
    after: only one may exist at a time. `trt_cache`: where TensorRT keeps the engine it builds."""
    @contextlib.contextmanager
    def opener() -> Iterator[Run]:
        box = {"sess": make_session(path, target, trt_cache=trt_cache)}
        feeds = {box["sess"].get_inputs()[0].name: x}

        def run() -> object:
            return box["sess"].run(None, feeds)

        try:
            yield run
        finally:
            box.clear()

    return opener


def progress_bar(total: int, desc: str, enabled: bool) -> Any:

    return tqdm(total=total, desc=desc, unit="step", disable=not enabled, leave=True, dynamic_ncols=True)


def timed(openers: dict[str, Opener], policy: TimingPolicy, seed: int, desc: str,
          progress: bool) -> tuple[dict[str, Timing], BackgroundLog]:
    """`time_items` with a progress bar that grows when unstable items get extra rounds."""
    bar = progress_bar(len(openers) * policy.rounds, desc, progress)

    def grow(n: int) -> None:
        bar.total += n
        bar.refresh()

    with bar:
        return time_items(openers, policy, seed=seed, progress=lambda _k: bar.update(1), extra_round=grow)


def count_items(parts: int, subnets: int) -> str:
    """'22 parts + 10 subnets', leaving out a kind there is none of."""
    return " + ".join(x for x in (f"{parts} parts" if parts else "", f"{subnets} subnets" if subnets else "")
                      if x)


# ------------------------------------------------------------------------------------------ manifest
@dataclass(frozen=True)
class BundleItem:
    key: str
    kind: str  # "part" or "subnet"
    file: str  # relative to the bundle folder
    sha256: str
    bytes: int
    input_shape: tuple[int, ...]
    input_seed: int
    sample: dict[str, Any] | None = None  # subnets only

    def to_dict(self) -> dict[str, Any]:
        d = {"key": self.key, "kind": self.kind, "file": self.file, "sha256": self.sha256,
             "bytes": self.bytes, "input_shape": list(self.input_shape), "input_seed": self.input_seed}
        if self.sample is not None:
            d["sample"] = dict(self.sample)
        return d


@dataclass(frozen=True)
class Bundle:
    """A read and checked manifest; `sha256` is that of bundle.json, which timings.json must quote."""

    directory: Path
    doc: dict[str, Any]
    sha256: str
    target: Target
    policy: TimingPolicy
    items: list[BundleItem]

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    @property
    def timings_path(self) -> Path:
        return self.directory / TIMINGS

    @property
    def trt_cache(self) -> Path:
        """TensorRT's engine and timing caches for this bundle's files: inside the bundle, absolute, so
        a second run from any working directory reuses them (and they travel with the bundle)."""
        return (self.directory / TRT_CACHE_DIR).resolve()

    @property
    def seed(self) -> int:
        return int(self.doc["seed"])

    def item_keys(self, kind: str | None = None) -> list[str]:
        return [i.key for i in self.items if kind is None or i.kind == kind]


def parse_policy(d: Any, problems: list[str], where: str = "policy") -> TimingPolicy:
    """A TimingPolicy from its to_dict(); unknown or missing fields are problems, not silent defaults."""
    names = {f.name for f in dataclasses.fields(TimingPolicy)}
    if not isinstance(d, dict):
        problems.append(f"{where}: expected a mapping of {', '.join(sorted(names))}")
        return TimingPolicy()
    bad = sorted(set(d) ^ names)
    if bad:
        problems.append(f"{where}: unknown or missing fields {', '.join(bad)}")
        return TimingPolicy()
    default = TimingPolicy()
    for name, v in d.items():
        kind = type(getattr(default, name))
        ok = isinstance(v, kind) or (kind is float and isinstance(v, int))
        if not ok or isinstance(v, bool) or (kind is not str and v < 0):
            problems.append(f"{where}.{name}: expected a non-negative {kind.__name__}, got {v!r}")
    if problems:
        return default
    policy = TimingPolicy(**d)
    if policy.rounds < 1 or policy.min_runs < 1:
        problems.append(f"{where}: rounds and min_runs must be at least 1")
    return policy


def _parse_item(i: int, d: Any, problems: list[str]) -> BundleItem | None:
    where = f"items[{i}]"
    try:
        item = BundleItem(key=str(d["key"]), kind=str(d["kind"]), file=str(d["file"]),
                          sha256=str(d["sha256"]), bytes=int(d["bytes"]),
                          input_shape=tuple(int(x) for x in d["input_shape"]),
                          input_seed=int(d["input_seed"]), sample=d.get("sample"))
    except (KeyError, TypeError, ValueError):
        problems.append(f"{where}: expected key, kind, file, sha256, bytes, input_shape and input_seed")
        return None
    if not item.input_shape or min(item.input_shape) < 1 or item.input_seed < 0:
        problems.append(f"{where} ({item.key}): input_shape {list(item.input_shape)} or input_seed "
                        f"{item.input_seed} out of range")
    rel = PurePosixPath(item.file)
    if rel.is_absolute() or ".." in rel.parts or not item.file:
        problems.append(f"{where} ({item.key}): file {item.file!r} must be a path inside the bundle folder")
    if item.kind not in KINDS:
        problems.append(f"{where} ({item.key}): kind {item.kind!r}, expected one of {', '.join(KINDS)}")
    if item.kind == "subnet" and not isinstance(item.sample, dict):
        problems.append(f"{where} ({item.key}): a subnet needs its sample")
    return item


def _parse_manifest(doc: Any, path: Path) -> tuple[Target, TimingPolicy, list[BundleItem]]:
    check_header(doc, FORMAT, VERSION, "profile bundle manifest", path)
    check(doc, MANIFEST_SCHEMA, "profile bundle manifest", path)
    problems: list[str] = []
    policy = parse_policy(doc["policy"], problems)
    items = [it for i, d in enumerate(doc["items"]) if (it := _parse_item(i, d, problems)) is not None]
    seen: set[str] = set()
    for it in items:
        if it.key in seen:
            problems.append(f"key {it.key!r} appears twice")
        seen.add(it.key)
    if not items:
        problems.append("no items to time")
    if problems:
        raise SSTEdgeError("not a valid profile bundle manifest", path, problems)
    return _bundle_target(doc["target"], path), policy, items


def _bundle_target(record: Mapping[str, Any], path: Path) -> Target:
    """Rebuild the Target from its canonical settings, and check it hashes as it did on the host."""
    target = parse_target(record.get("settings"), f"{path} (target)")
    if target.hash != record.get("hash"):
        raise SSTEdgeError(f"target '{target.name}' rebuilds with hash {target.hash}, the manifest says "
                           f"{record.get('hash')}: host and device run different sst-edge versions", path)
    return target


def file_problems(directory: Path, items: list[BundleItem]) -> list[str]:
    """Every item file that is missing or differs from what the manifest recorded, named."""
    problems = []
    for it in items:
        f = directory / it.file
        if not f.is_file():
            problems.append(f"{f}: missing ({it.key})")
        elif (got := sha256_file(f)) != it.sha256:
            problems.append(f"{f}: sha256 {got[:16]}... does not match the manifest's {it.sha256[:16]}... "
                            f"({it.key}: changed or damaged since the host wrote it; copy the bundle again)")
    return problems


def read_bundle(directory: str | Path, check_files: bool = True) -> Bundle:
    """Read and check DIR/bundle.json (and, with `check_files`, every file's presence and sha256)."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise SSTEdgeError("profile bundle folder not found", directory)
    if not path.is_file():
        raise SSTEdgeError(f"no {MANIFEST} here: not a profile bundle (write one with "
                           "`sst-edge profile --space S --target T --bundle DIR`)", directory)
    raw = read_bytes(path, "profile bundle manifest", JSON_MAX_BYTES)  # hashed as read: timings.json
    doc = parse_json(raw, path, "profile bundle manifest")  # quotes this sha256
    target, policy, items = _parse_manifest(doc, path)
    if check_files and (problems := file_problems(directory, items)):
        raise SSTEdgeError("files of the bundle do not match its manifest", path, problems)
    return Bundle(directory, doc, sha256_bytes(raw), target, policy, items)


# --------------------------------------------------------------------------------------------- timing
def bundle_openers(bundle: Bundle) -> dict[str, Opener]:
    return {it.key: ort_opener(bundle.directory / it.file, bundle.target,
                               make_input(it.input_shape, it.input_seed), bundle.trt_cache)
            for it in bundle.items}


def run_bundle(bundle: Bundle | str | Path, policy: TimingPolicy | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Time every item of a bundle on this device and write DIR/timings.json atomically; returns it.

    `policy` defaults to the manifest's. Items are timed as `profile` times them: interleaved rounds,
    one session at a time, disturbed rounds redone (see `timing.time_items`), round order from the seed.
    """
    bundle = bundle if isinstance(bundle, Bundle) else read_bundle(bundle)
    target = bundle.target
    policy = policy or bundle.policy
    policy = dataclasses.replace(policy, clock=resolve_clock(target, policy.clock))
    t0 = time.monotonic()
    what = count_items(len(bundle.item_keys("part")), len(bundle.item_keys("subnet")))
    timings, background = timed(bundle_openers(bundle), policy, bundle.seed,
                                f"time {what} on {target.name}/{file_backend(target)}", progress)
    doc = {
        "format": TIMINGS_FORMAT,
        "version": TIMINGS_VERSION,
        "manifest_sha256": bundle.sha256,
        "space": bundle.doc["space"],
        "target": target.name,
        "created": utc_now(),
        "duration_s": round(time.monotonic() - t0, 1),
        "fingerprint": fingerprint(target, file_backend(target)),
        "policy": policy.to_dict(),
        "seed": bundle.seed,
        "background": background.to_dict(),
        "timings": {k: t.to_dict() for k, t in timings.items()},
    }
    atomic_write_json(bundle.timings_path, doc)
    return doc


def read_timings(bundle: Bundle) -> tuple[dict[str, Any], dict[str, Timing]]:
    """DIR/timings.json checked against the bundle: its manifest's sha256, a valid timing for every item.

    Returns the document and its timings by key.
    """
    path = bundle.timings_path
    if not path.is_file():
        raise SSTEdgeError("no timings.json: run `sst-edge profile --run-bundle DIR` on the device and "
                           "copy DIR back", bundle.directory)
    doc = read_json(path, "bundle timings")
    if not isinstance(doc, dict) or doc.get("format") != TIMINGS_FORMAT:
        raise SSTEdgeError(f"not a timings file of a profile bundle (format {TIMINGS_FORMAT!r})", path)
    check(doc, TIMINGS_SCHEMA, "bundle timings file", path)
    if doc.get("manifest_sha256") != bundle.sha256:
        theirs = str(doc.get("manifest_sha256"))[:16]
        raise SSTEdgeError(f"these timings belong to another bundle (manifest sha256 {theirs}..., this "
                           f"bundle's {bundle.sha256[:16]}...): run this bundle on the device", path)
    problems: list[str] = []
    got = doc.get("timings") if isinstance(doc.get("timings"), dict) else {}
    out: dict[str, Timing] = {}
    for key in bundle.item_keys():
        try:
            out[key] = Timing.from_dict(got[key])
        except KeyError:
            problems.append(f"{key}: no timing")
        except (TypeError, ValueError):
            problems.append(f"{key}: expected median_ms, p10_ms, p90_ms and count")
        else:
            if not out[key].median_ms > 0:
                problems.append(f"{key}: median_ms must be positive, got {out[key].median_ms}")
    for k in ("fingerprint", "policy", "background"):
        if not isinstance(doc.get(k), dict):
            problems.append(f"'{k}' missing or not a mapping")
    if problems:
        raise SSTEdgeError("incomplete bundle timings", path, problems)
    return doc, out


def describe_run(bundle_dir: str | Path, doc: Mapping[str, Any]) -> str:
    """What `profile --run-bundle` prints: what was timed, where, how loaded, and what to do next."""
    fp, bg = doc["fingerprint"], doc["background"]
    lines = [f"{Path(bundle_dir) / TIMINGS}: {len(doc['timings'])} items of {doc['space']} on "
             f"{doc['target']} in {doc['duration_s']} s, {doc['policy']['clock']} clock",
             f"  device: {fp.get('cpu_model')}, {fp.get('cpu_count')} CPUs"
             + (f", GPU {fp['gpu']}" if fp.get("gpu") else "")
             + f"; {fp.get('execution_provider')}, {fp.get('precision')}, {fp.get('threads')} thread(s)"]
    if bg.get("rounds"):
        lines.append(f"  background load: mean {bg['mean_cores']:.2f} cores, max {bg['max_cores']:.2f}; "
                     f"{bg['redone']} of {bg['rounds']} rounds redone, {bg['disturbed']} kept disturbed")
    lines.append(f"  next: copy {bundle_dir} back to the host and run "
                 f"`sst-edge profile --from-bundle {bundle_dir}`")
    return "\n".join(lines)


def run_bundle_verb(directory: str | Path, rounds: int | None = None, clock: str = "auto",
                    quick: bool = False, progress: bool = True) -> Report:
    """`profile --run-bundle`: the manifest's policy with the command line's overrides; the timings
    document it wrote, with its summary."""
    bundle = read_bundle(directory)
    doc = run_bundle(bundle, make_policy(bundle.policy, rounds, clock, quick), progress)
    return Report(describe_run(directory, doc).split("\n"), dict(doc))
