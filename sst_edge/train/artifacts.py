"""A training run's files, read back by the later stages: the supernet weights (a run folder's
supernet.safetensors or newest checkpoint), the restriction it trained to, and the few-shot head it trained
through (run.json). Evaluation, search and export all start here."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..device.cca import check_params
from ..device.evaluation import head_notes
from ..device.settings import FROM_RUN, PARAMETRIC_HEADS, HeadConfig
from ..errors import SSTEdgeError
from ..fewshot_cca import PREFIX as HEAD_PREFIX
from ..fewshot_cca import prefixed
from ..fileio import read_json
from ..space.config import SpaceConfig
from ..space.restriction import load_restriction, run_restriction_file
from ..space.subnet import sample_problems
from ..space.supernet import build_supernet, load_shared_weights
from .checkpoint import checkpoint_paths, complete_checkpoints, load_tensors, model_state

WEIGHTS_FILE = "supernet.safetensors"
RUN_FILE = "run.json"  # train.loop's run record (its config.head is the head the run trained through)
SUPERNET_FORMAT = "sst-edge/supernet"


# -------------------------------------------------------------------------------------------- weights
def resolve_weights(path: str | Path) -> Path:
    """A run folder -> its final supernet.safetensors, else its newest checkpoint; a file -> itself."""
    path = Path(path)
    if path.is_dir():
        if (path / WEIGHTS_FILE).is_file():
            return path / WEIGHTS_FILE
        epochs = complete_checkpoints(path)
        if epochs:
            return checkpoint_paths(path, epochs[-1])[0]
        raise SSTEdgeError(f"no {WEIGHTS_FILE} or checkpoint here (is it a training run folder?)", path)
    if not path.is_file():
        raise SSTEdgeError("weights not found (expected a run folder or a .safetensors file)", path)
    return path


def weights_problems(meta: dict[str, Any], config: SpaceConfig) -> list[str]:
    """Why weights with this metadata cannot belong to `config` (another space, or its YAML changed)."""
    problems = []
    if meta.get("space") != config.name:
        problems.append(f"trained for space {meta.get('space')!r}, not '{config.name}'")
    if meta.get("space_hash") != config.hash:
        problems.append(f"space hash {meta.get('space_hash')!r} does not match '{config.name}' "
                        f"({config.hash}): the space YAML changed since training")
    return problems


def load_weights(weights: str | Path,
                 config: SpaceConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """Model state, metadata and file of a run folder or safetensors file, checked against `config`."""
    path = resolve_weights(weights)
    tensors, meta = load_tensors(path)
    problems = weights_problems(meta, config)
    if problems:
        raise SSTEdgeError("weights do not fit the space", path, problems)
    state = model_state(tensors) if any(k.startswith("model.") for k in tensors) else tensors
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}  # a cca head's: head_params
    return state, meta, path


def single_path(sample: dict[str, Any]) -> dict[str, list]:
    """The restriction holding exactly one subnet: what a fine-tuning run trains and saves."""
    return {label: [value] for label, value in sample.items()}


def load_supernet(weights: str | Path, config: SpaceConfig) -> tuple[nn.Module, dict[str, Any]]:
    """A supernet of `config` with the weights of a run folder or safetensors file (checked: space, hash).

    Built with the shapes the weights have: the whole space for a supernet run (shrinking drops no
    tensor, so subnets outside the restriction stay loadable), the one subnet for a fine-tuned run
    (metadata "subnet"). `supernet_choices` of the result says which; `activate` refuses the rest.
    """
    state, meta, path = load_weights(weights, config)
    tuned = meta.get("subnet")
    if tuned is not None:
        problems = sample_problems(config, tuned) if isinstance(tuned, dict) else ["not an object"]
        if problems:
            raise SSTEdgeError("the fine-tuned subnet in the metadata does not fit the space", path, problems)
        tuned = {k: tuned[k] for k in config.choices()}  # the metadata's JSON has its keys sorted
    supernet = build_supernet(config, single_path(tuned) if tuned else None)
    try:
        missing = load_shared_weights(supernet, state)
    except SSTEdgeError as e:
        raise SSTEdgeError(f"weights do not fit the supernet ({e})", path) from None
    if missing:
        raise SSTEdgeError(f"{len(missing)} supernet tensors missing from the weights", path, missing[:10])
    return supernet, {**meta, "subnet": tuned, "path": str(path)}


def run_restriction(weights: str | Path, config: SpaceConfig) -> dict[str, list] | None:
    """The restriction saved beside the weights (a run folder's restriction.json), if any."""
    path = Path(weights)
    folder = path if path.is_dir() else path.parent
    f = run_restriction_file(folder)
    return load_restriction(f, config).choices if f else None


# ------------------------------------------------------------------------------------------------ head
def trained_head(weights: str | Path) -> tuple[HeadConfig | None, Path]:
    """The head a run trained through: config.head of the run.json beside the weights (a run folder, or
    the folder of its .safetensors), and that file. (None, the path looked at) for bare weights with no
    run.json. A run.json that cannot be read or holds no valid head is an error naming the file."""
    path = Path(weights)
    run = (path if path.is_dir() else path.parent) / RUN_FILE
    if not run.is_file():
        return None, run
    doc = read_json(run, "run record")
    config = doc.get("config") if isinstance(doc, dict) else None
    head = config.get("head") if isinstance(config, dict) else None
    if not isinstance(head, dict):
        raise SSTEdgeError("holds no few-shot head (config.head): is it the run.json of `sst-edge train`?",
                           run)
    problems = [f"{k} must be a finite number, got {head[k]!r}" for k in ("tau",)
                if k in head and not (isinstance(head[k], int | float) and not isinstance(head[k], bool)
                                      and math.isfinite(head[k]))]
    if problems:
        raise SSTEdgeError("holds a bad few-shot head (config.head)", run, problems)
    try:
        return HeadConfig.from_dict(head), run
    except SSTEdgeError as e:
        raise SSTEdgeError(f"holds a bad few-shot head (config.head): {e.message}", run, e.problems) from None
    except (TypeError, ValueError) as e:
        raise SSTEdgeError(f"holds a bad few-shot head (config.head): {e}", run) from None


@dataclass
class HeadChoice:
    """The head a stage (eval, search, export) uses: the run's, unless a setting was given explicitly.

    `trained`: the run's head (None: no run.json, the defaults are used); `given`: the explicit settings;
    `notes`: every way the used head differs from the run's, or that there was no run to take it from."""

    head: HeadConfig
    trained: HeadConfig | None
    source: str
    given: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    used: list[HeadConfig] = field(default_factory=list)  # each kind asked for (cca: weights attached)
    weights: Path | None = None  # where a cca head's weights come from

    def configs(self, kinds: Sequence[str] | None = None) -> list[HeadConfig]:
        """The head for each of `kinds` (default: the chosen kind) with the chosen tau and window (a cca
        head with the run's weights attached)."""
        by_kind = {h.kind: h for h in [self.head, *self.used]}
        return [by_kind.get(k) or attach_params(self.head.as_kind(k), self.weights)
                for k in (kinds or [self.head.kind])]

    def to_dict(self) -> dict[str, Any]:
        return {"used": self.head.to_dict(), "trained": self.trained.to_dict() if self.trained else None,
                "source": self.source, "given": dict(self.given), "notes": list(self.notes)}


def choose_head(weights: str | Path, kinds: Sequence[str] | None = None, tau: float | None = None,
                window: int | None | str = FROM_RUN, warn: bool = True) -> HeadChoice:
    """The head for `weights`: kind, tau and window from the run (run.json beside the weights), each
    overridden by an explicit value (`kinds` None, `tau` None, `window` FROM_RUN: from the run). A value
    that differs from the run's, or weights without a run.json (the defaults), is noted and, with `warn`,
    warned about."""
    trained, run = trained_head(weights)
    base = trained or HeadConfig()
    given: dict[str, Any] = {}
    if kinds:
        given["kind"] = list(kinds) if len(kinds) > 1 else kinds[0]
    if tau is not None:
        given["tau"] = tau
    if window != FROM_RUN:
        given["window"] = window

    def kind_head(kind: str) -> HeadConfig:
        """The run's constants where they mean the same for `kind` (`as_kind`), then what was given."""
        start = base.as_kind(kind)
        return attach_params(HeadConfig(kind, start.tau if tau is None else tau,
                                        start.window if window == FROM_RUN else window),  # type: ignore[arg-type]
                             weights)

    used = [kind_head(k) for k in (kinds or [base.kind])]
    head = used[0]
    if trained is None:
        source = f"defaults (no {RUN_FILE} beside {weights})"
        notes = [f"no {RUN_FILE} beside {weights}: the head the weights were trained with is unknown; using "
                 f"kind {head.kind}, tau {head.tau}, window {head.window}"
                 + (" (defaults apart from what was given)" if given else " (the defaults)")]
    else:
        source = str(run) + (" with " + ", ".join(f"{k} {v!r}" for k, v in given.items()) + " given"
                             if given else "")
        notes = head_notes(trained, used, str(run))
    if warn:
        for n in notes:
            warnings.warn(n, stacklevel=2)
    return HeadChoice(head, trained, source, given, notes, used, Path(weights))


def head_params(weights: str | Path) -> dict[str, Any]:
    """The cca head's weights ("fewshot.*") in the weights file of a run folder or safetensors file, as
    float32 numpy arrays; weights without them (a run not trained with --head cca) are an error naming the
    file."""
    path = resolve_weights(weights)
    tensors, _ = load_tensors(path)
    found = prefixed(tensors)
    if not found:
        raise SSTEdgeError(f"holds no cca head weights ({HEAD_PREFIX}*): the cca head is learned, so it "
                           "needs weights trained with `sst-edge train --head cca`", path)
    params = {k: v.float().numpy() for k, v in found.items()}
    check_params(params, None, path)
    return params


def attach_params(head: HeadConfig, weights: str | Path | None) -> HeadConfig:
    """`head` with the run's cca weights attached (other kinds, or weights already there: as it is)."""
    if head.kind not in PARAMETRIC_HEADS or head.params is not None:
        return head
    if weights is None:
        raise SSTEdgeError("the cca head needs the weights of a cca run, and none were given")
    return head.with_params(head_params(weights))


