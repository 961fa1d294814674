"""Write RGB frames as an H.264 mp4 with PyAV (the synthetic dataset, tests and the benchmark use it)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from ..fileio import atomic_write


def write_video(path: str | Path, frames: np.ndarray, fps: int = 12, crf: int = 20, gop: int = 8,
                bframes: int = 2, preset: str = "medium", rotation: int = 0) -> Path:
    """Encode uint8 ``[N, H, W, 3]`` frames (H and W even) as H.264/yuv420p, written atomically.

    A short GOP with B-frames makes decoders reorder and seek, as real datasets do. The same frames give
    the same bytes in any process: x264 runs on one thread and without its macroblock-tree rate control
    (mbtree), whose SIMD code made the output depend on the state of the process's memory, so that the
    same frames encoded twice, in two processes or even in one, could differ by several levels.
    ``rotation`` sets the display-rotation flag (counter-clockwise degrees) that phone videos carry.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
    n, h, w, _ = frames.shape
    if n < 1 or h % 2 or w % 2:
        raise ValueError(f"need >= 1 frame of even height and width, got {n} frames of {h}x{w}")

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": str(crf), "g": str(gop), "bf": str(bframes), "preset": preset,
                              "threads": "1", "x264-params": "mbtree=0"}
            if rotation:
                stream.set_display_rotation(rotation)
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)

    return atomic_write(path, write)
