"""INT8 for CPU targets: dynamic or static (calibrated) quantization, with the accuracy change measured.

Dynamic: weights int8 offline, activation ranges at run time (no data needed). Static: activation ranges
fixed from calibration clips of the training split, QDQ format (ONNX Runtime fuses QDQ pairs into integer
kernels). Both quantize MatMul/Gemm only: quantized convolutions are slower than fp32 on this CPU
(docs/measurements.md). An int8 model is only worth shipping next to what it costs in accuracy,
so with a dataset both models are scored on the same validation episodes through ONNX Runtime.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)
from tqdm import tqdm

from ..cost.onnx_export import _quiet, agreement, quantize_dynamic_int8
from ..data.episodes import EpisodeDataset
from ..device.datasets import load_splits
from ..device.evaluation import confidence_interval, paired_change
from ..device.preprocess import load_clip
from ..device.session import INPUT_NAME, cpu_session, ort_features
from ..device.settings import HeadConfig
from ..device.targets import Target
from ..errors import SSTEdgeError
from ..fileio import atomic_write
from ..space.config import SpaceConfig
from ..train.evaluate import compare_embeddings

MODES = ("dynamic", "static")
METHODS = ("minmax", "entropy", "percentile")


def calibration_clips(data: str | Path, config: SpaceConfig, count: int, seed: int = 0,
                      progress: bool = False, split: str = "train") -> list[np.ndarray]:
    """`count` clips of `split` (seeded), preprocessed as at evaluation, each [1, T, 3, H, W]."""

    clips = load_splits(data)[split]
    paths = [p for p, _ in clips.items()]
    if not paths:
        raise SSTEdgeError(f"the {split} split holds no clips", data)
    chosen = random.Random(seed).sample(paths, min(count, len(paths)))
    pre = config.eval_preprocess()
    return [load_clip(p, pre)[None] for p in tqdm(chosen, desc="calibration clips", unit="clip",
                                                          disable=not progress, leave=False)]


def quantize_static_int8(src: str | Path, dst: str | Path, clips: list[np.ndarray],
                         op_types: tuple[str, ...] = ("MatMul", "Gemm"), per_channel: bool = False,
                         reduce_range: bool = False, method: str = "minmax") -> Path:
    """ORT `quant_pre_process`, then static QDQ quantization with activation ranges from `clips`."""

    if method not in METHODS:
        raise SSTEdgeError(f"unknown calibration method {method!r} (known: {', '.join(METHODS)})")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(clips)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {INPUT_NAME: x}

    dst = Path(dst)
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        with _quiet():
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)

        def write(out: Path) -> None:
            with _quiet():
                quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=list(op_types), per_channel=per_channel,
                                reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, calibrate_method=methods[method])

        return atomic_write(dst, write)


def episode_accuracy(paths: dict[str, Any], target: Target, config: SpaceConfig, data: str | Path,
                     head: Any, episodes: int, split: str = "val", seed: int = 0,
                     progress: bool = False) -> dict[str, np.ndarray]:
    """Per-episode 5-way 1-shot accuracies of each ONNX model (a path, run on ONNX Runtime's CPU provider,
    or an open session such as OpenVINO's) on the same seeded episodes of `split` (paired: the change
    between two models is measured episode by episode)."""
    clips = getattr(load_splits(data), split)
    way = min(5, len(clips.classes))
    ds = EpisodeDataset(clips, config.eval_preprocess(), way=way, shot=1, query=1, episodes=episodes,
                        seed=seed, train=False)

    def embedder(sess: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: torch.from_numpy(sess.run(None, {INPUT_NAME: x.numpy()})[0])

    embeds = [embedder(p if hasattr(p, "run") else cpu_session(p, target)) for p in paths.values()]
    acc = compare_embeddings(embeds, ds, [head], progress=progress, desc="accuracy " + " vs ".join(paths))
    return {key: a[0] for key, a in zip(paths, acc, strict=True)}


def quantize_for_target(fp32: Path, dst: Path, target: Target, config: SpaceConfig, *, mode: str | None,
                        data: str | Path | None, clips: np.ndarray, episodes: int = 100,
                        head: Any = None, progress: bool = False,
                        say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Quantize `fp32` into `dst` as the target says (or `mode`); returns the card's quantization record:
    settings, agreement with fp32 on `clips`, and the accuracy change when `data` is given."""
    q = target.quantization
    settings = {"op_types": list(q.op_types) if q else ["MatMul", "Gemm"],
                "per_channel": q.per_channel if q else False, "reduce_range": q.reduce_range if q else False}
    mode = mode or (q.mode if q else "dynamic")
    if mode not in MODES:
        raise SSTEdgeError(f"unknown quantization mode {mode!r} (known: {', '.join(MODES)})")
    rec: dict[str, Any] = {"mode": mode, **settings}
    if mode == "static":
        if data is None:
            raise SSTEdgeError("static quantization calibrates on clips of a dataset: pass --data DIR "
                               "(or use --quantization dynamic)", target.source or target.name)
        cal = dict(q.calibration) if q and q.calibration else {}
        count, method = int(cal.get("clips", 64)), str(cal.get("method", "minmax"))
        seed = int(cal.get("seed", 0))
        say(f"int8    static quantization, {method} calibration on {count} training clips")
        cal_clips = calibration_clips(data, config, count, seed, progress)
        quantize_static_int8(fp32, dst, cal_clips, settings["op_types"], settings["per_channel"],
                             settings["reduce_range"], method)
        rec["calibration"] = {"method": method, "clips": len(cal_clips), "seed": seed, "split": "train",
                              "data": str(data)}
    else:
        say("int8    dynamic quantization of " + "/".join(settings["op_types"]))
        quantize_dynamic_int8(fp32, dst, tuple(settings["op_types"]), settings["per_channel"],
                              settings["reduce_range"])
    on = "random clips"
    if data is not None:  # real clips: static ranges were calibrated on real clips, not on noise
        clips = np.concatenate(calibration_clips(data, config, 4, seed=1, split="val"))
        on = "4 validation clips"
    ref = ort_features(cpu_session(fp32, target), clips)
    got = ort_features(cpu_session(dst, target), clips)
    rec["agreement_with_fp32"] = {**agreement(ref, got), "on": on}
    if data is None or episodes <= 0:
        rec["accuracy"] = {"why": "pass --data DIR (and --episodes > 0) to measure the accuracy change on "
                                  "validation episodes"}
        return rec
    head = head or HeadConfig()
    acc = episode_accuracy({"fp32": fp32, "int8": dst}, target, config, data, head, episodes,
                           progress=progress)
    change = paired_change(acc["fp32"], acc["int8"])
    rec["accuracy"] = {"split": "val", "way": 5, "shot": 1, "head": head.kind,
                       "fp32": float(acc["fp32"].mean()), "int8": float(acc["int8"].mean()),
                       "fp32_ci95": confidence_interval(acc["fp32"]),
                       "int8_ci95": confidence_interval(acc["int8"]), **change}
    sig = "significant" if change["significant"] else "not significant"
    say(f"int8    accuracy on {episodes} val episodes: fp32 {rec['accuracy']['fp32']:.1%}, int8 "
        f"{rec['accuracy']['int8']:.1%}: {change['change_points']:+.2f} points "
        f"(95% CI +-{change['ci95_points']:.2f}, paired, {sig})")
    return rec
