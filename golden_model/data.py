"""Synthetic video action dataset: one moving shape per clip, the class is the motion.

Every clip shows one shape (bar, triangle, L, ellipse) in a random colour on a random dark
background with per-pixel sensor noise. The ten classes (:data:`CLASSES`) differ only in how the
shape changes over time::

    move_right  move_left  move_up  move_down   translate 10-16 px over the clip (at 64x64)
    rotate                                      turn 60-110 degrees over the clip (cw or ccw)
    grow        shrink                          scale by 1.6-2.1x (or its inverse) over the clip
    blink                                       shape visible in even frames only
    shake                                       jump 5-8 px along a random axis and back, every frame
    stationary                                  no motion

(The direction of a rotation is a nuisance, not a class: a first version with ``rotate_cw`` and
``rotate_ccw`` classes left the tiny SVFormer at chance between the two after a CPU-sized
training run, while the other classes were learnt.)

All nuisance parameters (shape, start position, start angle, size, colours, noise, amount of
motion, per-frame position jitter and brightness flicker) are drawn independently of the label,
and the first frame depends on the nuisance parameters only: **the first frame of a clip is
identical whatever its label**, so no single first frame tells the class (:func:`render` with the
same parameters and different labels shows this). Motion amounts are set per clip, not per
frame, so any ``frames >= 2`` works; sizes scale with ``img_size / 64``.

Determinism: clip ``i`` of a split is a function of ``(seed, split, i)`` only (its own
``numpy.random.SeedSequence([seed, split_code, i])``), so a smaller dataset is a prefix of a
bigger one, and the train and test splits use disjoint seed streams. The label of clip ``i`` is
``i % 10`` (balanced in every prefix of a multiple of 10 clips).

Clips come as uint8 RGB ``(3, T, H, W)`` like decoded video; :func:`normalize` maps them to the
float network input ``(x/255 - 0.45) / 0.225`` (upstream SVFormer's mean and std).

Typical use::

    ds = SyntheticActions("test", size=500)        # frames=4, img_size=64, seed=0
    x, y = ds[0]                                   # float (3, 4, 64, 64), int label
    raw = ds.clips                                 # uint8 (500, 3, 4, 64, 64), read-only cache
    xs = normalize(ds.clips[:8])                   # float (8, 3, 4, 64, 64)
    clips, labels = generate("test", range(8))     # uint8 clips + int64 labels, no dataset
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

CLASSES: tuple[str, ...] = (
    "move_right", "move_left", "move_up", "move_down",
    "rotate", "grow", "shrink", "blink", "shake", "stationary",
)
NUM_CLASSES = len(CLASSES)
SHAPES: tuple[str, ...] = ("bar", "triangle", "ell", "ellipse")
SPLITS = {"train": 0, "test": 1}
MEAN = 0.45
STD = 0.225
DATASET_NAME = "synthetic-actions-v1"

# nuisance / motion ranges at img_size 64 (lengths scale with img_size / 64)
_SIZE = (7.0, 10.0)             # shape half-extent, px
_START_MARGIN = 16.0            # first-frame centre uniform in [margin, S - margin]^2
_TRANSLATE = (10.0, 16.0)       # total displacement over the clip, px
_ROTATE = (60.0, 110.0)         # total rotation over the clip, degrees, either direction
_SHAKE = (5.0, 8.0)             # shake amplitude, px
_SCALE = (1.6, 2.1)             # total scale factor over the clip
_JITTER = 0.4                   # per-frame position jitter std, px
_FLICKER = (0.9, 1.0)           # per-frame brightness factor of the shape
_FG = (140.0, 255.0)            # shape colour per channel
_BG = (0.0, 90.0)               # background colour per channel
_NOISE = (3.0, 12.0)            # per-pixel noise std (uint8 units)
_NOISE_UNIT = math.sqrt(2 * (256 ** 2 - 1) / 12)  # std of a + b, a, b uniform bytes


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return int(value)


def _check_args(split: str, frames: int, img_size: int, seed: int) -> tuple[int, int, int]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return _check_int("frames", frames, 2), _check_int("img_size", img_size, 16), _check_int("seed", seed, 0)


@dataclass(frozen=True)
class ClipParams:
    """Per-clip parameters of a batch of N clips with T frames (numpy arrays, first axis N)."""

    shape: np.ndarray       # (N,) int, index into SHAPES
    center: np.ndarray      # (N, 2) first-frame centre (x, y), px
    size: np.ndarray        # (N,) first-frame half-extent, px
    angle: np.ndarray       # (N,) first-frame angle, radians
    fg: np.ndarray          # (N, 3) shape colour
    bg: np.ndarray          # (N, 3) background colour
    noise_std: np.ndarray   # (N,)
    translate: np.ndarray   # (N,) total displacement, px
    rotate: np.ndarray      # (N,) total rotation, radians, signed (> 0: clockwise on screen)
    shake: np.ndarray       # (N, 2) shake offset (x, y), px
    scale: np.ndarray       # (N,) total scale factor (> 1)
    jitter: np.ndarray      # (N, T, 2) per-frame position jitter, px
    flicker: np.ndarray     # (N, T) per-frame brightness factor
    noise: np.ndarray       # (N, 2, 3, T, S, S) uint8 uniform; noise = (a + b - 255) / 104.5 (triangular, std 1)


def sample_params(split: str, indices: Iterable[int], frames: int = 4, img_size: int = 64,
                  seed: int = 0) -> ClipParams:
    """The nuisance parameters of clips ``indices`` of a split (independent of the labels)."""
    frames, img_size, seed = _check_args(split, frames, img_size, seed)
    idx = [_check_int("index", i, 0) for i in indices]
    k = img_size / 64.0
    rows = []
    for i in idx:
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], i]))
        u = rng.random(19)
        rows.append((
            u,
            rng.standard_normal((frames, 2)),
            rng.random(frames),
            rng.integers(0, 256, (2, 3, frames, img_size, img_size), dtype=np.uint8),
        ))
    if not rows:
        raise ValueError("no clip indices given")
    u = np.stack([r[0] for r in rows])
    lerp = lambda a, lo_hi: lo_hi[0] + a * (lo_hi[1] - lo_hi[0])  # noqa: E731
    m = _START_MARGIN * k
    return ClipParams(
        shape=np.minimum((u[:, 0] * len(SHAPES)).astype(np.int64), len(SHAPES) - 1),
        center=m + u[:, 1:3] * (img_size - 2 * m),
        size=lerp(u[:, 3], _SIZE) * k,
        angle=u[:, 4] * 2 * math.pi,
        fg=lerp(u[:, 5:8], _FG),
        bg=lerp(u[:, 8:11], _BG),
        noise_std=lerp(u[:, 11], _NOISE),
        translate=lerp(u[:, 12], _TRANSLATE) * k,
        rotate=np.deg2rad(lerp(u[:, 13], _ROTATE)) * np.where(u[:, 15] < 0.5, -1.0, 1.0),
        shake=lerp(u[:, 16], _SHAKE)[:, None] * k * np.stack(
            [np.cos(2 * math.pi * u[:, 17]), np.sin(2 * math.pi * u[:, 17])], axis=1),
        scale=lerp(u[:, 14], _SCALE),
        jitter=np.stack([r[1] for r in rows]) * _JITTER * k,
        flicker=lerp(np.stack([r[2] for r in rows]), _FLICKER),
        noise=np.stack([r[3] for r in rows]),
    )


def _shape_distance(shape: int, u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance (shape units, < 0 inside) of ``SHAPES[shape]`` at local ``(u, w)``."""
    if shape == 0:  # bar
        return torch.maximum(u.abs() - 1.0, w.abs() - 0.4)
    if shape == 1:  # isosceles triangle, apex (1, 0), base corners (-0.8, +-0.65)
        a, b = 0.65 / math.hypot(0.65, 1.8), 1.8 / math.hypot(0.65, 1.8)
        return torch.maximum(torch.maximum(-0.8 - u, a * u + b * w - a), a * u - b * w - a)
    if shape == 2:  # L: two 2 x 0.65 arms
        return torch.minimum(torch.maximum(u.abs() - 1.0, (w + 0.675).abs() - 0.325),
                             torch.maximum((u + 0.675).abs() - 0.325, w.abs() - 1.0))
    return (torch.sqrt(u * u + (w / 0.45) ** 2) - 1.0) * 0.45  # ellipse 1 x 0.45


def render(params: ClipParams, labels) -> torch.Tensor:
    """uint8 clips ``(N, 3, T, S, S)`` of ``params`` moving as ``labels`` (N ints)."""
    lab = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
    n, _, _, t, s, _ = params.noise.shape
    if lab.numel() != n:
        raise ValueError(f"{lab.numel()} labels for {n} clips")
    if lab.numel() and (lab.min() < 0 or lab.max() >= NUM_CLASSES):
        raise ValueError(f"labels must lie in [0, {NUM_CLASSES})")
    f64 = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    p = torch.arange(t, dtype=torch.float64) / (t - 1)          # progress 0..1 over the clip
    one = lambda c: (lab == CLASSES.index(c)).double()[:, None]  # noqa: E731
    amount = f64(params.translate)[:, None] * p
    cx = f64(params.center[:, 0])[:, None] + amount * (one("move_right") - one("move_left"))
    cy = f64(params.center[:, 1])[:, None] + amount * (one("move_down") - one("move_up"))
    odd = (torch.arange(t) % 2).double() * one("shake")
    cx = cx + odd * f64(params.shake[:, 0])[:, None] + f64(params.jitter[..., 0])
    cy = cy + odd * f64(params.shake[:, 1])[:, None] + f64(params.jitter[..., 1])
    # image y points down, so a positive angle turns clockwise on screen
    ang = f64(params.angle)[:, None] + f64(params.rotate)[:, None] * p * one("rotate")
    logs = torch.log(f64(params.scale))[:, None] * p * (one("grow") - one("shrink"))
    size = f64(params.size)[:, None] * torch.exp(logs)
    vis = torch.where((lab == CLASSES.index("blink"))[:, None] & (torch.arange(t) % 2 == 1), 0.0, 1.0)
    vis = vis * f64(params.flicker)

    grid = torch.arange(s, dtype=torch.float32) + 0.5
    dx = grid.view(1, 1, 1, s) - cx.float()[..., None, None]     # (N, T, 1, S)
    dy = grid.view(1, 1, s, 1) - cy.float()[..., None, None]     # (N, T, S, 1)
    c, sn = torch.cos(ang).float()[..., None, None], torch.sin(ang).float()[..., None, None]
    sz = size.float()[..., None, None]
    u = (c * dx + sn * dy) / sz
    w = (-sn * dx + c * dy) / sz
    d = torch.empty_like(u)
    shape = torch.as_tensor(params.shape)
    for k in range(len(SHAPES)):
        sel = shape == k
        if sel.any():
            d[sel] = _shape_distance(k, u[sel], w[sel]) * sz[sel]  # px
    cover = (0.5 - d).clamp_(0.0, 1.0) * vis.float()[..., None, None]  # (N, T, S, S)
    fg = torch.as_tensor(params.fg, dtype=torch.float32).view(n, 3, 1, 1, 1)
    bg = torch.as_tensor(params.bg, dtype=torch.float32).view(n, 3, 1, 1, 1)
    k = torch.as_tensor(params.noise_std, dtype=torch.float32).view(n, 1, 1, 1, 1) / _NOISE_UNIT
    noise = torch.as_tensor(params.noise)
    # bg + cover * (fg - bg) + k * (a + b - 255), a and b uniform bytes
    img = torch.addcmul(bg - 255.0 * k, cover[:, None], fg - bg)
    img.addcmul_(noise[:, 0].float(), k).addcmul_(noise[:, 1].float(), k)
    return img.round_().clamp_(0, 255).to(torch.uint8)


def label_of(index: int) -> int:
    """The label of clip ``index`` of any split: ``index % 10``."""
    return _check_int("index", index, 0) % NUM_CLASSES


def generate(split: str, indices: Iterable[int], frames: int = 4, img_size: int = 64,
             seed: int = 0, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips ``indices`` of a split: uint8 ``(N, 3, T, S, S)`` and int64 labels ``(N,)``."""
    idx = list(indices)
    _check_args(split, frames, img_size, seed)
    if not idx:
        raise ValueError("no clip indices given")
    chunk = _check_int("chunk", chunk, 1)
    labels = torch.tensor([label_of(i) for i in idx], dtype=torch.int64)
    out = torch.empty((len(idx), 3, frames, img_size, img_size), dtype=torch.uint8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small elementwise ops: one thread is faster, much faster on a busy CPU
    try:
        for a in range(0, len(idx), chunk):
            params = sample_params(split, idx[a:a + chunk], frames, img_size, seed)
            out[a:a + chunk] = render(params, labels[a:a + chunk].numpy())
    finally:
        torch.set_num_threads(threads)
    return out, labels


@functools.lru_cache(maxsize=8)
def _cached_split(split: str, size: int, frames: int, img_size: int, seed: int):
    clips, labels = generate(split, range(size), frames, img_size, seed)
    return clips, labels


def normalize(clip: torch.Tensor) -> torch.Tensor:
    """uint8 clip(s) -> float32 network input ``(x/255 - 0.45) / 0.225``, same shape."""
    if isinstance(clip, np.ndarray):
        clip = torch.from_numpy(clip)
    if not isinstance(clip, torch.Tensor) or clip.dtype != torch.uint8:
        raise TypeError(f"normalize expects a uint8 clip, got {getattr(clip, 'dtype', type(clip))}")
    return (clip.float() / 255.0 - MEAN) / STD


class SyntheticActions(Dataset):
    """One split of the synthetic action dataset, generated once and cached in memory.

    Args:
        split: ``"train"`` or ``"test"`` (disjoint seed streams).
        size: number of clips (clip ``i`` has label ``i % 10``).
        frames: T (>= 2).  img_size: S (>= 16).  seed: dataset seed (>= 0).

    ``ds[i]`` is ``(normalize(clip) (3, T, S, S) float32, label int)``; ``ds.clips`` (uint8
    ``(N, 3, T, S, S)``) and ``ds.labels`` (int64 ``(N,)``) are shared cached tensors: do not
    modify them in place.
    """

    classes = CLASSES

    def __init__(self, split: str = "train", size: int = 1000, frames: int = 4, img_size: int = 64,
                 seed: int = 0):
        frames, img_size, seed = _check_args(split, frames, img_size, seed)
        size = _check_int("size", size, 1)
        self.split, self.size, self.frames, self.img_size, self.seed = split, size, frames, img_size, seed
        self.clips, self.labels = _cached_split(split, size, frames, img_size, seed)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(i).__name__}")
        if not -self.size <= i < self.size:
            raise IndexError(f"index {i} out of range for {self.size} clips")
        return normalize(self.clips[i]), int(self.labels[i])

    def raw(self, i: int) -> torch.Tensor:
        """The uint8 clip ``(3, T, S, S)`` of item ``i``."""
        return self.clips[i]

    def batch(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised clips and labels of many items at once: ``(B, 3, T, S, S)``, ``(B,)``."""
        return normalize(self.clips[index]), self.labels[index]

    def spec(self) -> dict:
        """Generation parameters (stored in checkpoints)."""
        return {"name": DATASET_NAME, "split": self.split, "size": self.size, "frames": self.frames,
                "img_size": self.img_size, "seed": self.seed, "classes": list(CLASSES),
                "mean": MEAN, "std": STD}

    def __repr__(self) -> str:
        return (f"SyntheticActions(split={self.split!r}, size={self.size}, frames={self.frames}, "
                f"img_size={self.img_size}, seed={self.seed})")
