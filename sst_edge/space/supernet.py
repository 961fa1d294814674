"""The weight-sharing supernet: NNI's RandomOneShot over SSTSpace, driven by samples we choose.

NNI silently draws labels missing from a sample at random, so every activation validates first.
Weights shared across restrictions: a restricted space has narrower (or fewer) candidates, and each of
its tensors is the leading slice of the full supernet's, exactly as NNI's weight slicing reads them.

Single-path one-shot training (one uniformly drawn subnet per episode) is the paper's; sharing one weight
tensor between a layer's head counts by slicing (AutoFormer style) is our reading.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._nni import BaseSuperNetModule, RandomOneShot
from ..errors import SSTEdgeError
from .config import Choices, SpaceConfig
from .model import SSTSpace
from .subnet import sample_problems


def build_supernet(config: SpaceConfig, restriction: Choices | None = None) -> nn.Module:
    """A trainable supernet (LayerChoice -> PathSamplingLayer, MutableLinear -> MixedLinear)."""
    return RandomOneShot().mutate_model(SSTSpace(config, restriction))


def _supernet_modules(supernet: nn.Module) -> list[nn.Module]:
    return [m for m in supernet.modules() if isinstance(m, BaseSuperNetModule)]


_CHOICES: weakref.WeakKeyDictionary[nn.Module, dict[str, list]] = weakref.WeakKeyDictionary()


def supernet_choices(supernet: nn.Module) -> dict[str, list]:
    """The values each label can take in this supernet: fewer than the space's in a restricted one.

    Read from the supernet's own mutables (cached: they never change), so a supernet loaded from weights
    of a shrunk or fine-tuned run validates samples against what it actually holds.
    """
    if supernet not in _CHOICES:
        _CHOICES[supernet] = {label: list(m.values) for label, m in supernet.simplify().items()
                              if hasattr(m, "values")}
    return _CHOICES[supernet]


def _allowed(supernet: nn.Module, restriction: Choices | None) -> dict[str, list]:
    """The supernet's choices narrowed by `restrict`: NNI routes to a missing candidate without a word."""
    held = supernet_choices(supernet)
    if not restriction:
        return held
    return {label: [v for v in values if v in restriction[label]] if label in restriction else values
            for label, values in held.items()}


def activate(supernet: nn.Module, config: SpaceConfig, sample: Mapping[str, Any],
             restriction: Choices | None = None) -> None:
    """Route the supernet through one subnet. Raises on any unknown, missing or out-of-range label,
    out-of-range meaning outside `restrict` or outside what the supernet was built with."""
    problems = sample_problems(config, sample, _allowed(supernet, restriction))
    if problems:
        raise SSTEdgeError("cannot activate this sample", None, problems)
    memo = dict(sample)
    for m in _supernet_modules(supernet):
        m.resample(memo)


def freeze_subnet(supernet: nn.Module, config: SpaceConfig, sample: Mapping[str, Any],
                  restriction: Choices | None = None) -> nn.Module:
    """A plain nn.Module of one subnet whose weights are sliced copies of the supernet's."""
    problems = sample_problems(config, sample, _allowed(supernet, restriction))
    if problems:
        raise SSTEdgeError("cannot freeze this sample", None, problems)
    return supernet.freeze(dict(sample))


def random_sample(config: SpaceConfig, rng: random.Random,
                  restriction: Choices | None = None) -> dict[str, Any]:
    """A uniform draw over the (restricted) space, label by label (cheaper than space.random())."""
    choices = config.choices()
    if restriction:
        choices.update({k: list(v) for k, v in restriction.items() if k in choices})
    return {label: rng.choice(values) for label, values in choices.items()}


def load_shared_weights(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Load supernet weights into a supernet of the same or a restricted space.

    Tensors of dropped candidates are ignored; tensors of narrower layers take the leading slice.
    Returns the keys of `model` that `state` did not provide (empty when all weights were found).
    """
    own = model.state_dict()
    missing = []
    with torch.no_grad():
        for key, target in own.items():
            src = state.get(key)
            if src is None:
                missing.append(key)
                continue
            if src.shape != target.shape:
                narrower = any(s < t for s, t in zip(src.shape, target.shape, strict=True))
                if src.dim() != target.dim() or narrower:
                    raise SSTEdgeError(f"weight '{key}' has shape {tuple(src.shape)}, "
                                       f"which cannot hold {tuple(target.shape)}")
                src = src[tuple(slice(0, t) for t in target.shape)]
            target.copy_(src)
    return missing
