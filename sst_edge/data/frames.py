"""Write clips as folders of numbered frames, the layout of the TRX / STRM / HyRSM datasets (host side).

Tests and ``bench/decode.py`` turn a video dataset into a frame dataset with it to compare the two paths;
JPEGs are written as ``ffmpeg -i clip.mp4 -q:v 2 %08d.jpg`` writes them (FFmpeg's mjpeg encoder, full-range
4:2:0, quantiser 2), the usual way those datasets were extracted.
"""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from ..device.datasets import scan_class_folders
from ..device.decoders import make_decoder
from ..errors import SSTEdgeError

FORMATS = {"jpg": ("mjpeg", "yuvj420p"), "png": ("png", "rgb24")}


def encode_image(frame: np.ndarray, ext: str = "jpg", quality: int = 2) -> bytes:
    """One uint8 RGB ``[H, W, 3]`` frame as JPEG (``quality``: FFmpeg's quantiser, 2 best .. 31) or PNG."""
    if ext not in FORMATS:
        raise SSTEdgeError(f"frame format must be one of {', '.join(FORMATS)}, got {ext!r}")
    codec, pix_fmt = FORMATS[ext]
    h, w = frame.shape[:2]
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = w, h, pix_fmt, Fraction(1, 25)
    if codec == "mjpeg":  # a fixed quantiser, as -q:v sets it (rate control would re-encode, 10x slower)
        q = str(int(quality))
        ctx.options = {"flags": "+qscale", "global_quality": str(int(quality) * 118), "qmin": q, "qmax": q}
    image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(format=pix_fmt)
    packets = ctx.encode(image) + ctx.encode(None)
    return b"".join(bytes(p) for p in packets)


def write_frames(folder: str | Path, frames: np.ndarray, ext: str = "jpg", quality: int = 2, digits: int = 8,
                 start: int = 1) -> Path:
    """uint8 ``[N, H, W, 3]`` frames as a new ``folder/00000001.jpg ...``: written into a temporary folder
    renamed at the end, so an interrupted run leaves no half clip (only a hidden temporary folder)."""
    folder = Path(folder)
    if folder.exists():
        raise SSTEdgeError("frame folder exists already", folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, frame in enumerate(np.asarray(frames)):
        (tmp / f"{start + i:0{digits}d}.{ext}").write_bytes(encode_image(frame, ext, quality))
    tmp.rename(folder)
    return folder


def videos_to_frames(root: str | Path, out: str | Path, ext: str = "jpg", quality: int = 2,
                     progress: bool = True) -> Path:
    """A copy of the video dataset at ``root`` with every clip as a frame folder ``out/<class>/<clip>/``
    (all frames at native size, decoded by PyAV); ``root/splits`` and top-level files are copied as they
    are (entries name clips without the extension in the ARN / OTAM format, so they resolve to folders)."""
    root, out = Path(root), Path(out)
    dec = make_decoder("pyav")
    jobs = [(c, p) for c, paths in scan_class_folders(root).items() for p in paths if p.is_file()]
    for cls, path in tqdm(jobs, desc="extracting frames", unit="clip", disable=not progress):
        frames = dec.read(path, range(dec.info(path).num_frames))
        write_frames(out / cls / path.stem, frames, ext, quality)
    if (root / "splits").is_dir():
        shutil.copytree(root / "splits", out / "splits", dirs_exist_ok=True)
    for f in root.iterdir():  # classes.json and the like
        if f.is_file() and not f.name.startswith("."):
            shutil.copy2(f, out / f.name)
    return out
