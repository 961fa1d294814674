"""Background footage unlike the synthetic actions, made at test time: what a camera shows between actions.

There is no real camera footage offline; these stand in for it, seeded, as uint8 frames ``[T, H, W, 3]``:
- `texture_frames`: a moving texture, a natural-statistics (1/f amplitude spectrum, like photographs)
  texture that drifts and whose phases change frame by frame (water, foliage in wind, flicker);
- `pan_frames`: a camera pan over a still natural-statistics texture, with a soft object crossing it;
- `gradient_frames`: the tests' gradient-and-disc video (a colour gradient, a frame-numbered level, a
  moving disc, sensor noise).
Synthetic classes never enrolled (data/synth.py) are the third kind of background the open-set tests use.
"""

from __future__ import annotations

import numpy as np

KINDS = ("moving texture", "camera pan", "gradient + disc")


def _spectrum(h: int, w: int, rng: np.random.Generator, slope: float = 1.0) -> np.ndarray:
    f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    f[0, 0] = 1.0
    return 1.0 / f ** slope * (rng.normal(size=(h, w)) + 1j * rng.normal(size=(h, w)))


def _levels(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean fields -> 0..255 around mid-grey with a random colour cast."""
    return np.clip(128 + 45 * (x - x.mean()) / x.std() + rng.uniform(-30, 30, 3), 0, 255)


def natural_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """RGB float texture ``[h, w, 3]`` in 0..255 with a 1/f amplitude spectrum (natural-image statistics)."""
    return _levels(np.stack([np.real(np.fft.ifft2(_spectrum(h, w, rng))) for _ in range(3)], -1), rng)


def texture_frames(seed: int, n: int = 16, h: int = 120, w: int = 160) -> np.ndarray:
    """A moving texture: a 1/f texture (spectral slope 0.8-1.3) drifting at a random velocity while each
    frequency's phase turns at its own random rate, so that the pattern both moves and changes."""
    rng = np.random.default_rng(seed)
    slope = rng.uniform(0.8, 1.3)
    spectra = [_spectrum(h, w, rng, slope) for _ in range(3)]
    turn = rng.normal(0, 0.3, size=(3, h, w))
    vy, vx = rng.normal(0, 1.5, 2)
    ky, kx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    frames = []
    for t in range(n):
        shift = np.exp(-2j * np.pi * (ky * vy * t + kx * vx * t))
        frames.append(np.stack([np.real(np.fft.ifft2(s * np.exp(1j * turn[c] * t) * shift))
                                for c, s in enumerate(spectra)], -1))
    return _levels(np.stack(frames), rng).astype(np.uint8)


def pan_frames(seed: int, n: int = 16, h: int = 120, w: int = 160) -> np.ndarray:
    """A camera pan over a natural-statistics texture (twice the frame each way) with a soft object
    crossing it."""
    rng = np.random.default_rng(seed)
    big = natural_texture(rng, 2 * h, 2 * w)
    dy, dx = rng.uniform(-1, 1, 2) * rng.uniform(1, 4) * h / 120  # up to 4 pixels a frame at 120 rows
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    (vy, vx), r = rng.normal(0, 2, 2), rng.uniform(8, 20)
    colour = rng.uniform(0, 255, 3)
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        oy = min(max(int(h / 2 + dy * t), 0), h)  # at the texture's edge the camera stops
        ox = min(max(int(w / 2 + dx * t), 0), w)
        m = 0.8 * np.exp(-((yy - cy - vy * t) ** 2 + (xx - cx - vx * t) ** 2) / (2 * r * r))[..., None]
        img = big[oy:oy + h, ox:ox + w] * (1 - m) + m * colour
        out[t] = np.clip(img + rng.normal(0, 3, img.shape), 0, 255)
    return out


def gradient_frames(seed: int, n: int = 50, h: int = 120, w: int = 160) -> np.ndarray:
    """The tests' moving_frames: a colour gradient, a frame-numbered level, a moving disc and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        f = out[i]
        f[..., 0], f[..., 1], f[..., 2] = xx * 255 // w, (i * 37) % 256, yy * 255 // h
        f[(xx - 10 - (i * 3) % (w - 20)) ** 2 + (yy - h // 2) ** 2 < 150] = 255
        out[i] = np.clip(f.astype(int) + rng.integers(-6, 7, f.shape), 0, 255)
    return out


def scene_frames(kind: str, seed: int, n: int = 16, h: int = 120, w: int = 160) -> np.ndarray:
    """Frames of one of KINDS."""
    makers = {"moving texture": texture_frames, "camera pan": pan_frames, "gradient + disc": gradient_frames}
    if kind not in makers:
        raise ValueError(f"unknown kind of background {kind!r} (kinds: {', '.join(KINDS)})")
    return makers[kind](seed, n, h, w)
