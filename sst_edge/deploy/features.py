"""At export: the training features of the out-of-distribution check (device/ood.py), stored with the model.

The clips are those of the split the model trained on: the dataset and split files of the run's run.json
(beside the weights), else `--data`'s training split. At most `count` of them (seeded, spread evenly over
the actions), embedded by the graph the model directory ships (the int8 or fp16 one where the target
quantizes or converts: the device's features are that graph's) on ONNX Runtime's CPU provider. Without
training data the model gets no distribution, and the card's `ood` section says why; the device then
runs without the check and says so.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..device.datasets import load_splits
from ..device.ood import OOD_FILE, card_record, fit_distribution, pool
from ..device.preprocess import load_clip
from ..device.session import INPUT_NAME, cpu_session, make_session
from ..device.targets import Target
from ..errors import SSTEdgeError
from ..fileio import atomic_write_bytes, read_json
from ..space.config import SpaceConfig
from ..text import printable
from ..train.artifacts import RUN_FILE

DEFAULT_CLIPS = 256  # sst_tiny: ~10 s on 2 cores; bounds export time on large training splits


def training_data(weights: str | Path, data: str | Path | None) -> tuple[Path | None, str | None, str, str]:
    """(dataset root, split folder or None, where it came from, "") of the data the model trained on, or
    (None, None, "", why there is none)."""
    w = Path(weights)
    run = (w if w.is_dir() else w.parent) / RUN_FILE
    why = f"no {RUN_FILE} beside the weights ({run})"
    if run.is_file():
        try:
            config = read_json(run, "run record").get("config") or {}
            root, split = config.get("data"), config.get("split")
        except (SSTEdgeError, AttributeError) as e:
            root, split, why = None, None, f"{run} cannot be read: {e}"
        if isinstance(root, str) and root:
            return Path(root), split if isinstance(split, str) else None, str(run), ""
    if data is not None:
        return Path(data), None, "--data", ""
    return None, None, "", printable(f"no training data: {why}, and no --data given")


CHECK_CLIPS = 8  # real clips of the shipped-graph checks (deploy/checks.py)


def check_clips(config: SpaceConfig, weights: str | Path, data: str | Path | None, fallback: np.ndarray,
                count: int = CHECK_CLIPS, seed: int = 0) -> tuple[np.ndarray, str]:
    """Clips of the validation split of the data the model trained on ([N, T, 3, H, W], "validation"),
    else of its training split; `fallback` (random clips, "random") when export has no readable data."""
    root, split, _source, _why = training_data(weights, data)
    if root is not None:
        pre = config.eval_preprocess()
        try:
            splits = load_splits(root, split)
            for name, part in (("validation", splits.val), ("training", splits.train)):
                paths = sorted(p for p, _ in part.items())
                if paths:
                    chosen = random.Random(seed).sample(paths, min(count, len(paths)))
                    return np.stack([load_clip(p, pre) for p in chosen]).astype(np.float32), name
        except SSTEdgeError:
            pass
    return fallback, "random"


def _pick(clips: dict[str, tuple[Path, ...]], count: int, seed: int) -> list[tuple[Path, str]]:
    """Up to `count` clips, round-robin over the actions (each action's clips in a seeded order)."""
    rng = random.Random(seed)
    queues = {c: rng.sample(list(p), len(p)) for c, p in clips.items()}
    out: list[tuple[Path, str]] = []
    while len(out) < count and any(queues.values()):
        for c, q in queues.items():
            if q and len(out) < count:
                out.append((q.pop(), c))
    return out


def training_features(model: Path, target: Target, config: SpaceConfig, weights: str | Path,
                      data: str | Path | None, out: Path, count: int = DEFAULT_CLIPS, seed: int = 0,
                      progress: bool = False, say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Embed up to `count` training clips with `model` and write their distribution to `out`/OOD_FILE;
    returns the card's `ood` record ({"why"} and nothing written, when there is no training data)."""
    if count <= 0:
        return {"why": "export was asked for no training features (--ood-clips 0)"}
    root, split, source, why = training_data(weights, data)
    if root is None:
        say(f"ood     {why}: the model gets no check of clips unlike the training data")
        return {"why": why}
    try:
        train = load_splits(root, split).train
    except SSTEdgeError as e:
        why = printable(f"the training data named by {source} cannot be read here ({e})")
        say(f"ood     {why}")
        return {"why": why}
    chosen = _pick(dict(train.clips), count, seed)
    pre = config.eval_preprocess()
    # the shipped runtime's features: ONNX Runtime's CPU provider, or OpenVINO at the hint export chose
    sess = make_session(model, target) if target.openvino else cpu_session(model, target)
    step = 8 if target.dynamic_batch else 1
    pooled: list[np.ndarray] = []
    labels: list[str] = []
    skipped = 0
    batch: list[tuple[np.ndarray, str]] = []

    def flush() -> None:
        x = np.stack([c for c, _ in batch]).astype(np.float32)
        f = sess.run(None, {INPUT_NAME: x})[0]
        if not np.isfinite(f).all():
            raise SSTEdgeError("the exported model gives non-finite features for training clips", model)
        pooled.append(pool(f))
        labels.extend(lb for _, lb in batch)
        batch.clear()

    for path, label in tqdm(chosen, desc="training features", unit="clip", disable=not progress, leave=False):
        try:
            batch.append((load_clip(path, pre), label))
        except SSTEdgeError:  # an unreadable clip: training replaced it too; counted
            skipped += 1
            continue
        if len(batch) == step:
            flush()
    if batch:
        flush()
    try:
        dist = fit_distribution(np.concatenate(pooled) if pooled else np.zeros((0, 1)), labels)
    except SSTEdgeError as e:
        why = f"the training split of {root} gave no usable features ({e.message}; {skipped} unreadable)"
        say(f"ood     {why}")
        return {"why": why}
    atomic_write_bytes(out / OOD_FILE, dist.to_bytes())
    say(f"ood     training features of {dist.clips} clips ({dist.classes} actions, {root}, from {source}); "
        f"Ledoit-Wolf shrinkage {dist.shrinkage['within']:.3f} (within-action)")
    return card_record(dist, data=printable(str(root)), skipped=skipped, source=printable(source),
                       split="train" if split is None else printable(f"train of {split}"))
