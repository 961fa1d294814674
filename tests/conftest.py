"""Data fixtures: a synthetic dataset generated once per session, and small procedural videos."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from live_scene import live_scene  # noqa: F401 - the live tests' model, gallery and video
from live_servers import live_servers  # noqa: F401 - the fixture of real servers for the live tests

from sst_edge.data.encode import write_video
from sst_edge.data.synth import generate_synthetic


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default synthetic dataset (24 classes x 10 clips, 16 frames of 64x86; 12/6/6 classes)."""
    return generate_synthetic(tmp_path_factory.mktemp("synth") / "synth", seed=0, progress=False)


def moving_frames(n: int = 50, h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """Frames where every frame differs (a gradient, a frame-numbered level, a moving disc and noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        f = out[i]
        f[..., 0] = xx * 255 // w
        f[..., 1] = (i * 37) % 256
        f[..., 2] = yy * 255 // h
        f[(xx - 10 - (i * 3) % (w - 20)) ** 2 + (yy - h // 2) ** 2 < 150] = 255
        out[i] = np.clip(f.astype(int) + rng.integers(-6, 7, f.shape), 0, 255)
    return out


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """``make_video(name, n=50, h=120, w=160, gop=8, bframes=2, rotation=0)`` -> an H.264 mp4 in tmp_path."""

    def make(name: str = "clip.mp4", n: int = 50, h: int = 120, w: int = 160, gop: int = 8, bframes: int = 2,
             rotation: int = 0, seed: int = 0) -> Path:
        return write_video(tmp_path / name, moving_frames(n, h, w, seed), gop=gop, bframes=bframes,
                           rotation=rotation)

    return make


@pytest.fixture(scope="session")
def bframe_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 frames of 160x120 H.264 with B-frames and a keyframe every 8 frames."""
    return write_video(tmp_path_factory.mktemp("video") / "bframes.mp4", moving_frames(), gop=8, bframes=2)


@pytest.fixture(scope="session")
def trained_run(synth_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly trained sst_tiny supernet, shared by the search, export and runtime tests."""
    from sst_edge.train.config import ShrinkConfig, TrainConfig
    from sst_edge.train.loop import train_supernet

    out = tmp_path_factory.mktemp("run") / "tiny"
    cfg = TrainConfig(space="sst_tiny", data=str(synth_dataset), episodes=40, epochs=3, val_episodes=6,
                      lr_warmup=20, workers=0, threads=1,
                      shrink=ShrinkConfig(warmup=1, period=1, min_count=3))
    train_supernet(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_subnet(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A subnet document of the largest subnet left in `trained_run`'s shrunk space."""
    from sst_edge.cost.flops import extreme_sample
    from sst_edge.space.config import load_space
    from sst_edge.space.subnet import make_subnet
    from sst_edge.train.artifacts import run_restriction

    config = load_space("sst_tiny")
    sample = extreme_sample(config, run_restriction(trained_run, config), largest=True)
    return make_subnet(config, sample).save(tmp_path_factory.mktemp("subnet") / "best.json")


@pytest.fixture(scope="session")
def exported_model(trained_run: Path, tiny_subnet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny_subnet` with `trained_run`'s weights exported for cpu-fp32: a model directory."""
    from sst_edge.deploy.export import export_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    export_model(tiny_subnet, trained_run, "cpu-fp32", out, measure=False, progress=False)
    return out
