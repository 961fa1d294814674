"""Run `sst-edge` in a child process where the host half's libraries cannot be imported.

The device half (enroll, classify, stream, gallery, eval --model, profile --run-bundle) must work on a
Jetson or a bare CPU box that has none of them: a meta-path finder makes every import of them raise, so a
stray import anywhere on a verb's path fails the verb, not just a lazy one that never runs in a test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

HOST_ONLY = ("torch", "torchvision", "nni", "fvcore", "onnx", "onnxscript", "lightning", "pytorch_lightning",
             "matplotlib", "scipy")

_PRELUDE = f"""
import sys
class _HostOnly:
    BLOCKED = {HOST_ONLY!r}
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ImportError(f"{{name}} is host-only: the device half must not import it")
        return None
sys.meta_path.insert(0, _HostOnly())
"""


def hostless_code(body: str) -> str:
    """Python source that blocks the host-only libraries, then runs `body`."""
    return _PRELUDE + body


def run_hostless(args: Sequence[str], cwd: str | Path | None = None, timeout: float = 600,
                 python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    """`sst-edge ARGS` in a child process where importing any of HOST_ONLY raises ImportError."""
    body = f"from sst_edge.cli import main\nsys.exit(main({list(map(str, args))!r}))\n"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([python, "-c", hostless_code(body)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)
