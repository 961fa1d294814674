"""The on-device model: an exported model directory behind ONNX Runtime, clips in, frame features out.

Nothing runs before the model file's sha256 matches its card: a gallery is only meaningful for the exact
model that made its features, and a silently modified file would make every later answer wrong. The hot
path is numpy in, numpy out (no torch on the device); decoding and preprocessing are the training code's
(`load_clip` with the card's `Preprocess`), so the device sees clips prepared exactly as in evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.decoders import VideoDecoder, get_decoder, resolve_decoder_name
from ..deploy.card import MODEL_FILE, ModelCard, load_card, verify_files
from ..deploy.onnx_export import make_session_options
from ..errors import SSTEdgeError

# Fastest first; ORT assigns each node to the first provider in the list that supports it.
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(available: Sequence[str], wanted: Sequence[str] | None = None) -> list[str]:
    """TensorRT, CUDA, CPU: those available, in that order; `wanted` restricts the set (each must exist)."""
    if wanted is not None:
        unknown = [p for p in wanted if p not in PROVIDER_ORDER]
        missing = [p for p in wanted if p in PROVIDER_ORDER and p not in available]
        if unknown or missing or not wanted:
            problems = [f"unknown provider {p!r} (known: {', '.join(PROVIDER_ORDER)})" for p in unknown]
            have = ", ".join(available)
            problems += [f"{p} is not in this onnxruntime (available: {have})" for p in missing]
            problems += ["no provider given"] if not wanted else []
            raise SSTEdgeError("cannot use the requested execution providers", None, problems)
    chosen = [p for p in PROVIDER_ORDER if p in available and (wanted is None or p in wanted)]
    if not chosen:
        raise SSTEdgeError(f"this onnxruntime has none of {', '.join(PROVIDER_ORDER)} "
                           f"(available: {', '.join(available)})")
    return chosen


class FewShotRuntime:
    """An exported model, verified and loaded: `embed` clips, `load` videos, `embed_paths` both.

    threads: ONNX Runtime intra-op threads (default: the card's target; 0 = ORT's default).
    providers: restrict the execution providers (default: every one of TensorRT, CUDA, CPU present).
    decoder: 'auto' | 'decord' | 'pyav' (default: the card's preprocessing).
    """

    def __init__(self, model_dir: str | Path, threads: int | None = None,
                 providers: Sequence[str] | None = None, decoder: str | None = None):
        import onnxruntime as ort

        self.card: ModelCard = load_card(model_dir)
        assert self.card.path is not None
        self.model_dir = self.card.path.parent
        self.model_path = self.model_dir / MODEL_FILE
        verify_files(self.card)  # every file the card lists, model.onnx first among them
        self.decoder_name = resolve_decoder_name(decoder or self.card.preprocess.decoder)
        target = self.card.target
        self.threads = int(threads if threads is not None else target.get("threads", 1) or 0)
        if self.threads < 0:
            raise SSTEdgeError(f"threads must be >= 0 (0 = ONNX Runtime's default), got {self.threads}")
        self.providers = choose_providers(ort.get_available_providers(), providers)
        so = make_session_options(str(target.get("graph_optimization", "all")), self.threads)
        options = target.get("provider_options") or {}
        try:
            self.session = ort.InferenceSession(str(self.model_path), so, providers=self.providers,
                                                provider_options=[dict(options.get(p, {}))
                                                                  for p in self.providers])
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise SSTEdgeError(f"ONNX Runtime cannot load this model: {e}", self.model_path) from None
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        shape = self.card.input["shape"]
        self.clip_shape = tuple(int(d) for d in shape[1:])  # (T, 3, H, W)
        self.batch = shape[0] if isinstance(shape[0], int) else None  # None: dynamic batch

    @property
    def frames(self) -> int:
        return self.card.frames

    @property
    def feature_dim(self) -> int:
        return self.card.feature_dim

    @property
    def feature_shape(self) -> tuple[int, int]:
        return (self.card.frames, self.card.feature_dim)

    def describe(self) -> dict[str, Any]:
        return {"model": self.card.name, "sha256": self.card.sha256,
                "providers": self.session.get_providers(), "threads": self.threads,
                "decoder": self.decoder_name}

    # ------------------------------------------------------------------------------------------ embed
    def embed(self, clips: np.ndarray) -> np.ndarray:
        """Preprocessed clips float32 ``[B, T, 3, H, W]`` -> per-frame features float32 ``[B, T, C]``."""
        x = np.asarray(clips)
        want = ", ".join(map(str, self.clip_shape))
        if x.ndim == 4:
            raise SSTEdgeError(f"embed takes a batch [B, {want}]; got one clip {x.shape}: add a leading axis")
        if x.ndim != 5 or tuple(x.shape[1:]) != self.clip_shape:
            raise SSTEdgeError(f"model '{self.card.name}' takes clips [B, {want}], got {tuple(x.shape)}",
                               self.model_path)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0, *self.feature_shape), np.float32)
        step = self.batch or len(x)
        parts = [self.session.run([self.output_name], {self.input_name: x[i:i + step]})[0]
                 for i in range(0, len(x), step)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def embed_torch(self, clips: Any) -> Any:
        """`embed` for a torch tensor (evaluation reuses the training code's episode loop)."""
        import torch

        return torch.from_numpy(self.embed(clips.numpy()))

    # ------------------------------------------------------------------------------------------- load
    def decoder(self) -> VideoDecoder:
        """This thread's decoder (decoders must not be shared across threads)."""
        return get_decoder(self.decoder_name)

    def load(self, path: str | Path, decoder: VideoDecoder | None = None) -> np.ndarray:
        """Decode and preprocess one video as in evaluation (segment centres, centre crop):
        float32 ``[T, 3, H, W]``. Raises `VideoError` (naming the file) for an unreadable one."""
        from ..data.preprocess import load_clip

        return load_clip(path, self.card.preprocess, train=False, decoder=decoder or self.decoder()).numpy()

    def embed_paths(self, paths: Sequence[str | Path], batch: int = 8) -> np.ndarray:
        """Features ``[N, T, C]`` of videos, decoded and embedded `batch` at a time."""
        out = []
        for i in range(0, len(paths), batch):
            out.append(self.embed(np.stack([self.load(p) for p in paths[i:i + batch]])))
        return np.concatenate(out) if out else np.zeros((0, *self.feature_shape), np.float32)
