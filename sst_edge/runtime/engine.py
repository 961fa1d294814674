"""The on-device model: an exported model directory behind ONNX Runtime, clips in, frame features out.

Nothing runs before every file the model loads (model.onnx and any external data it names) matches the
sha256 in its card, and the session's inputs and outputs are what the card says: a gallery is only
meaningful for the exact model that made its features, and a silently modified file would make every
later answer wrong. The hot
path is numpy in, numpy out (no torch on the device); decoding and preprocessing are the training code's
(`load_clip` with the card's `Preprocess`), so the device sees clips prepared exactly as in evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..device.card import CARD_FILE, MODEL_FILE, ModelCard, load_card, session_problems, verify_files
from ..device.decoders import VideoDecoder, get_decoder, resolve_decoder_name
from ..device.onnx_files import unlisted_external_data
from ..device.ood import FeatureDistribution, load_distribution
from ..device.openvino import OpenVINOSession, resolve_hint
from ..device.preprocess import load_clip
from ..device.session import choose_providers, make_session_options, onnxruntime, provider_list
from ..errors import SSTEdgeError


class FewShotRuntime:
    """An exported model, verified and loaded: `embed` clips, `load` videos, `embed_paths` both.

    An OpenVINO model (target backend `openvino`) runs on OpenVINO's CPU plugin at the precision hint its
    card records; everything else is the same.

    threads: ONNX Runtime (or OpenVINO) intra-op threads (default: the card's target; 0 = ORT's default).
    providers: restrict the execution providers (default: every one of TensorRT, CUDA, CPU present).
    decoder: 'auto' | 'decord' | 'pyav' (default: the card's preprocessing).
    """

    def __init__(self, model_dir: str | Path, threads: int | None = None,
                 providers: Sequence[str] | None = None, decoder: str | None = None):
        self.card: ModelCard = load_card(model_dir)
        assert self.card.path is not None
        self.model_dir = self.card.path.parent
        self.model_path = self.model_dir / MODEL_FILE
        verify_files(self.card)  # every file the card lists, model.onnx first among them
        unlisted = unlisted_external_data(self.model_path, set(self.card.files))
        if unlisted:
            raise SSTEdgeError(f"{MODEL_FILE} loads external data that {CARD_FILE} does not list, so its "
                               "sha256 cannot be checked: refusing the model (re-export it)", self.model_path,
                               unlisted)
        self.decoder_name = resolve_decoder_name(decoder or self.card.preprocess.decoder)
        target = self.card.target
        self.backend = str(target.get("backend") or "onnxruntime")  # what runs the model: the card's
        self.precision_hint: str | None = None  # OpenVINO models: the hint they run at
        self.threads = int(threads if threads is not None else target.get("threads", 1) or 0)
        if self.threads < 0:
            raise SSTEdgeError(f"threads must be >= 0 (0 = ONNX Runtime's default), got {self.threads}")
        if self.backend == "openvino":
            self.session = self._openvino_session(providers)
            self.providers = self.session.get_providers()
        else:
            self.session = self._ort_session(providers)
        self._check_session()
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        shape = self.card.input["shape"]
        self.clip_shape = tuple(int(d) for d in shape[1:])  # (T, 3, H, W)
        self.batch = shape[0] if isinstance(shape[0], int) else None  # None: dynamic batch
        # the training features of the check of clips unlike them (None: the card has none, and why);
        # read once the session is what the card says, so that a card that lies about the model says so
        self.ood: FeatureDistribution | None
        self.ood, self.ood_why = load_distribution(self.card)

    def _ort_session(self, providers: Sequence[str] | None) -> Any:
        ort = onnxruntime()
        target = self.card.target
        self.providers = choose_providers(ort.get_available_providers(), providers)
        so = make_session_options(str(target.get("graph_optimization", "all")), self.threads)
        # the providers' options as export and profiling use them (TensorRT: session.tensorrt_options)
        chosen = provider_list(self.providers, target.get("provider_options") or {}, self.model_path,
                               target.get("precision") == "fp16", self.card.input["shape"])
        try:
            return ort.InferenceSession(str(self.model_path), so, providers=self.providers,
                                        provider_options=[o for _, o in chosen])
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise SSTEdgeError(f"ONNX Runtime cannot load this model: {e}", self.model_path) from None

    def _openvino_session(self, providers: Sequence[str] | None) -> OpenVINOSession:
        """The card's OpenVINO model at the precision hint export chose (its `openvino` section); a CPU
        without native bf16 runs fp32 (device/openvino.resolve_hint)."""
        if providers is not None:
            raise SSTEdgeError(f"model '{self.card.name}' runs on OpenVINO (target "
                               f"'{self.card.target.get('name')}'): `providers` chooses ONNX "
                               "Runtime providers, which it does not use", self.card.path)
        rec = self.card.openvino or {}
        self.precision_hint = resolve_hint(rec.get("precision_hint")
                                           or self.card.target.get("precision_hint"))
        return OpenVINOSession(self.model_path, self.threads, self.precision_hint)

    def _check_session(self) -> None:
        """The model must be what its card says (inputs, outputs, shapes, types) before any clip runs:
        every clip is prepared, and every gallery checked, by the card."""
        ports = [[(a.name, list(a.shape), a.type) for a in args]
                 for args in (self.session.get_inputs(), self.session.get_outputs())]
        problems = session_problems(self.card, *ports)
        if problems:
            raise SSTEdgeError(f"the model card does not describe {MODEL_FILE}: the card or the model was "
                               "changed after export (re-export the model)", self.card.path, problems)

    @property
    def runtime_name(self) -> str:
        """What runs the model, in words: OpenVINO or ONNX Runtime."""
        return "OpenVINO" if self.backend == "openvino" else "ONNX Runtime"

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
                **({"precision_hint": self.precision_hint} if self.precision_hint else {}),
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
        out = np.concatenate(parts)
        if out.shape != (len(x), *self.feature_shape):  # dimensions the model left symbolic
            raise SSTEdgeError(f"{MODEL_FILE} gave features {list(out.shape)} for {len(x)} clips; its card "
                               f"says [{len(x)}, {self.frames}, {self.feature_dim}] (re-export the model)",
                               self.model_path)
        return out.astype(np.float32, copy=False)

    # ------------------------------------------------------------------------------------------- load
    def decoder(self) -> VideoDecoder:
        """This thread's decoder (decoders must not be shared across threads)."""
        return get_decoder(self.decoder_name)

    def load(self, path: str | Path, decoder: VideoDecoder | None = None) -> np.ndarray:
        """Decode and preprocess one video or frame folder as in evaluation (segment centres, centre crop):
        float32 ``[T, 3, H, W]``. Raises `VideoError` (naming the file) for an unreadable one."""
        return load_clip(path, self.card.preprocess, train=False, decoder=decoder or self.decoder())

    def finite(self, feats: np.ndarray, what: str) -> np.ndarray:
        """`feats`, refused when non-finite: a model that overflows (fp16 can) must not put NaN into a
        gallery or a ranking. `what` names the clip (or frames) they came from."""
        if not np.isfinite(feats).all():
            raise SSTEdgeError(f"model '{self.card.name}' gave non-finite features (NaN or Infinity) for "
                               f"{what}: the model is broken or overflows at this precision", self.model_path)
        return feats

    def embed_file(self, path: str | Path, decoder: VideoDecoder | None = None) -> np.ndarray:
        """One clip's (video or frame folder) features ``[T, C]``, checked finite."""
        return self.finite(self.embed(self.load(path, decoder)[None])[0], str(path))

    def embed_paths(self, paths: Sequence[str | Path], batch: int = 8) -> np.ndarray:
        """Features ``[N, T, C]`` of clips (videos or frame folders), decoded and embedded `batch` at a time,
        checked finite."""
        out = []
        for i in range(0, len(paths), batch):
            chunk = paths[i:i + batch]
            out.append(self.finite(self.embed(np.stack([self.load(p) for p in chunk])),
                                   ", ".join(map(str, chunk))))
        return np.concatenate(out) if out else np.zeros((0, *self.feature_shape), np.float32)
