"""Data stage: decode clips (decord or PyAV), few-shot datasets and splits, episodes, the synthetic set.

Names are imported lazily, so ``import sst_edge.data`` costs nothing until a name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VideoError": "errors", "DatasetError": "errors",
    "VideoInfo": "probe", "FrameIndex": "probe", "probe_video": "probe", "decode_all": "probe",
    "VideoDecoder": "decoders", "DecordDecoder": "decoders", "PyAVDecoder": "decoders",
    "make_decoder": "decoders", "get_decoder": "decoders", "decord_available": "decoders",
    "resolve_decoder_name": "decoders",
    "Preprocess": "preprocess", "load_clip": "preprocess", "sample_indices": "preprocess",
    "resized_shape": "preprocess", "frames_to_tensor": "preprocess",
    "ClipSet": "datasets", "FewShotSplits": "datasets", "load_splits": "datasets",
    "read_split_file": "datasets", "find_split_files": "datasets", "scan_class_folders": "datasets",
    "split_classes": "datasets", "VIDEO_EXTENSIONS": "datasets",
    "Episode": "episodes", "EpisodeDataset": "episodes", "episode_loader": "episodes",
    "write_video": "encode",
    "SynthClass": "synth", "synth_classes": "synth", "render_clip": "synth", "generate_synthetic": "synth",
    "CheckReport": "check", "check_dataset": "check", "print_report": "check",
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
