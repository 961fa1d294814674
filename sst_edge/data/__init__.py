"""Data stage (host): torch episodes, the synthetic set, dataset checks. Decoding, preprocessing, datasets
and the numpy episode sampler are the device layer's (`sst_edge.device`).

Names are imported lazily, so ``import sst_edge.data`` costs nothing until a name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Episode": "episodes", "EpisodeDataset": "episodes", "episode_loader": "episodes",
    "write_video": "encode", "write_frames": "frames", "videos_to_frames": "frames", "encode_image": "frames",
    "SynthClass": "synth", "synth_classes": "synth", "render_clip": "synth", "generate_synthetic": "synth",
    "CheckReport": "check", "check_dataset": "check",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sst_edge.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
