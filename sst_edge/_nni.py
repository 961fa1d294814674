"""The one door to NNI 3.0: silences its import-time warnings and re-exports what we use. No other module
imports nni (the layers contract in pyproject.toml keeps `_nni` below space/, cost/, train/ and search/).

NNI has had no release since 3.0; keeping every import here makes a future swap one file's work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

_NOISE = r".*is found to be not a nn\.Module"
warnings.filterwarnings("ignore", message=_NOISE, category=RuntimeWarning)
# Trial processes spawned by NNI's local engine inherit this and stay quiet too.
os.environ.setdefault("PYTHONWARNINGS", "ignore::RuntimeWarning:nni.nas.nn.pytorch.layers")

import nni  # noqa: E402
from nni.experiment import RemoteMachineConfig  # noqa: E402
from nni.experiment import rest as nni_rest  # noqa: E402
from nni.mutable import Categorical, ExpressionConstraint, MutableExpression, Sample  # noqa: E402
from nni.nas.evaluator import FunctionalEvaluator  # noqa: E402
from nni.nas.experiment import NasExperiment, NasExperimentConfig  # noqa: E402
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableLinear  # noqa: E402
from nni.nas.nn.pytorch.base import ParametrizedModule, recursive_freeze  # noqa: E402
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule  # noqa: E402
from nni.nas.profiler import ExpressionProfiler  # noqa: E402
from nni.nas.profiler.pytorch.flops import FlopsParamsProfiler, FlopsResult  # noqa: E402
from nni.nas.profiler.pytorch.utils import MutableShape, profiler_leaf_module  # noqa: E402
from nni.nas.space import current_model  # noqa: E402
from nni.nas.strategy import RandomOneShot, RegularizedEvolution  # noqa: E402
from nni.runtime import log as _nni_log  # noqa: E402


@contextlib.contextmanager
def nni_log_to(path: Path | None) -> Iterator[None]:
    """While inside, NNI's log lines (logger `nni`: INFO and up, in colour, on stdout by NNI's default:
    a config warning, one `[Metric]` line per trial) go to `path` only, without colour codes; our own
    progress and results stay the only output. `path` None (`--verbose`): NNI prints as it does."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(_nni_log._LogFileFormatter())  # NNI's own file format, colour escapes dropped
    root = _nni_log._root_logger
    stdout = _nni_log._handlers.pop("_stdout_", None)  # NNI's stdout handler (runtime/log.py)
    if stdout is not None:
        root.removeHandler(stdout)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        if stdout is not None and "_stdout_" not in _nni_log._handlers:
            _nni_log._handlers["_stdout_"] = stdout
            root.addHandler(stdout)

__all__ = [
    "nni",
    "Categorical",
    "ExpressionConstraint",
    "FunctionalEvaluator",
    "NasExperiment",
    "NasExperimentConfig",
    "RemoteMachineConfig",
    "nni_rest",
    "RegularizedEvolution",
    "RandomOneShot",
    "BaseSuperNetModule",
    "MutableExpression",
    "Sample",
    "LayerChoice",
    "ModelSpace",
    "MutableLinear",
    "recursive_freeze",
    "ParametrizedModule",
    "ExpressionProfiler",
    "FlopsParamsProfiler",
    "FlopsResult",
    "MutableShape",
    "profiler_leaf_module",
    "current_model",
    "nni_log_to",
]
