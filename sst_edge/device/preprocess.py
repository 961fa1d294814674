"""Clip preprocessing in numpy: segment sampling, shorter-side resize, crop, flip, normalisation.

`Preprocess` is recorded in the model card, and training, evaluation and the on-device runtime all call
``load_clip(path, preprocess)`` with it, so every stage sees clips prepared exactly the same way. numpy
only (no torch): the device half has none, and training wraps the arrays with ``torch.from_numpy``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SSTEdgeError
from .decoders import DECODERS, VideoDecoder, get_decoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How a clip becomes a float32 tensor ``[frames, 3, size, size]``.

    frames: T frames, one per equal temporal segment (random offset in training, centre in evaluation).
    resize: the shorter side is resized to this (decoders decode straight to it), then a size x size crop
            (random in training, centre in evaluation).
    mean/std: per-channel normalisation of RGB in [0, 1].
    decoder: 'auto' | 'decord' | 'pyav'; both give the same pixels, so 'auto' is the portable choice.
    hflip: training only, flip horizontally with p=0.5. Off by default: it turns "left to right"
           into "right to left", which changes the class for direction-sensitive actions (SSv2, synth).
    """

    frames: int = 8
    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    decoder: str = "auto"
    hflip: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        problems = []
        if int(self.frames) < 1:
            problems.append(f"frames must be >= 1, got {self.frames}")
        if int(self.size) < 1:
            problems.append(f"size must be >= 1, got {self.size}")
        if int(self.resize) < int(self.size):
            problems.append(f"resize (shorter side, {self.resize}) must be >= size (crop, {self.size})")
        if len(self.mean) != 3 or len(self.std) != 3:
            problems.append("mean and std need 3 values (R, G, B)")
        if any(s <= 0 for s in self.std):
            problems.append(f"std must be > 0, got {self.std}")
        if self.decoder not in DECODERS:
            problems.append(f"decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if problems:
            raise SSTEdgeError("invalid preprocessing", problems=problems)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """Inverse of `to_dict`. Unknown keys are an error (a newer card must not be half understood);
        missing keys take the defaults."""
        if not isinstance(d, dict):
            raise SSTEdgeError(f"preprocessing must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SSTEdgeError(f"unknown preprocessing keys: {', '.join(unknown)} "
                               f"(known: {', '.join(sorted(known))})")
        try:
            kw = {k: v for k, v in d.items()}
            for k in ("frames", "size", "resize"):
                if k in kw:
                    kw[k] = int(kw[k])
            if "hflip" in kw:
                kw["hflip"] = bool(kw["hflip"])
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise SSTEdgeError(f"invalid preprocessing: {e}") from None


def sample_indices(num_frames: int, frames: int, train: bool,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """TSN segment sampling: split ``num_frames`` into ``frames`` equal segments, take one index in each.

    Training takes a uniformly random position in each segment, evaluation the segment centre. A clip
    shorter than ``frames`` yields repeated indices (each frame used about equally often), not an error.
    """
    if num_frames < 1:
        raise ValueError("a clip needs at least one frame")
    seg = num_frames / frames
    if train:
        offsets = (rng if rng is not None else np.random.default_rng()).random(frames)
    else:
        offsets = np.full(frames, 0.5)
    idx = np.floor((np.arange(frames) + offsets) * seg).astype(np.int64)
    return np.clip(idx, 0, num_frames - 1)


def resized_shape(height: int, width: int, shorter: int) -> tuple[int, int]:
    """(height, width) with the shorter side equal to ``shorter`` and the aspect ratio kept."""
    if height <= width:
        return shorter, max(shorter, int(round(width * shorter / height)))
    return max(shorter, int(round(height * shorter / width))), shorter


def frames_to_array(frames: np.ndarray, pre: Preprocess, train: bool = False,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 ``[T, h, w, 3]`` -> crop, optional flip, normalise -> float32 ``[T, 3, size, size]``."""
    t, h, w, _ = frames.shape
    s = pre.size
    if h < s or w < s:
        raise ValueError(f"frames of {h}x{w} are smaller than the crop {s}x{s}")
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        flip = bool(pre.hflip and rng.random() < 0.5)
    else:
        top, left, flip = (h - s) // 2, (w - s) // 2, False
    crop = frames[:, top:top + s, left:left + s]
    if flip:
        crop = crop[:, :, ::-1]
    scale = 1.0 / (255.0 * np.asarray(pre.std, np.float32))
    shift = -np.asarray(pre.mean, np.float32) / np.asarray(pre.std, np.float32)
    x = crop.astype(np.float32) * scale + shift
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def load_clip(path: str | Path, preprocess: Preprocess, train: bool = False,
              rng: np.random.Generator | None = None, decoder: VideoDecoder | None = None) -> np.ndarray:
    """Decode and preprocess one clip (a video file or a folder of frames) to float32 ``[T, 3, size, size]``.

    ``train=False`` (the default, and what the runtime uses) is deterministic: segment centres, centre
    crop, no flip. ``train=True`` draws offsets, crop and flip from ``rng``. Raises `VideoError` for an
    unreadable clip.
    """
    decoder = decoder if decoder is not None else get_decoder(preprocess.decoder)
    info = decoder.info(path)
    if train and rng is None:
        rng = np.random.default_rng()
    idx = sample_indices(info.num_frames, preprocess.frames, train, rng)
    frames = decoder.read(path, idx, resized_shape(info.height, info.width, preprocess.resize))
    return frames_to_array(frames, preprocess, train, rng)
