"""Clip sampling shared by the video datasets, video decoding with PyAV, and the dataset errors.

**Sampling** (:class:`ClipSampling`) follows the SlowFast trainer that upstream SVFormer uses
(``slowfast/datasets/decoder.py`` and ``utils.py``), with ``frames`` frames ``rate`` decoded
frames apart (defaults 16 and 4: a span of 64 decoded frames):

* **train** (one view per video): random temporal offset, uniform in ``[0, n - span]``; the short
  side is resized to a random length in ``train_scale`` (default ``(crop * 8/7, crop * 10/7)``,
  i.e. 256..320 for a 224 crop, SlowFast's ``TRAIN_JITTER_SCALES``), then a random
  ``crop x crop`` crop and a random horizontal flip.
* **test** (``clips x crops`` views per video, default 5 x 3 = 15, upstream's
  ``TEST.NUM_ENSEMBLE_VIEWS 5``, ``TEST.NUM_SPATIAL_CROPS 3``): with ``delta = max(n - span, 0)``,
  clip ``k`` of ``K`` starts at ``k * floor(delta / (K - 1))`` (``floor(delta / 2)`` for ``K = 1``):
  SlowFast's ``get_start_end_idx`` with ``use_offset``, which upstream SVFormer's config turns on
  (``DATA.USE_OFFSET_SAMPLING: True``); ``offset=False`` gives SlowFast's other rule
  ``floor(k * delta / K)``. The short side is resized to ``crop`` and ``crops`` crops are taken
  along the long side: left / centre / right (top / centre / bottom for portrait video); one
  crop = the centre.

Frame indices within a clip are ``start + i * rate`` (``i < frames``), clamped to the last frame,
so short videos repeat their last frame. ``rate`` counts decoded frames: SlowFast's PyAV path
also rescales the span by ``fps / 30`` (its ``target_fps``); that is not done here (UCF101 is
25 fps, so our span is 64 frames where that path would take 53).
Frames are decoded at most at the short side needed (``crop`` for test, ``train_scale[1]`` for
train; FFmpeg area scaling), then resized bilinearly (``torch.nn.functional.interpolate``,
``antialias=True``) on float pixels.
Pixels are normalised as ``(x / 255 - mean) / std`` (defaults 0.45, 0.225, upstream's and
:func:`golden_model.data.normalize`'s). A clip is ``(C, T, H, W)`` float32 and a stack of views
``(V, C, T, H, W)``: the models' input layout is ``(B, C, T, H, W)``.

Every sampling parameter is configurable, so the tiny configs work too
(``ClipSampling(frames=4, rate=4, crop=64)``); :meth:`ClipSampling.for_model` takes frames and
crop from a model config.

**Errors**: a missing file raises :class:`MissingDatasetFile` and a file that cannot be parsed
or decoded raises :class:`CorruptDatasetFile`; both carry ``.path`` and name it in the message.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov")


class DatasetFileError(ValueError):
    """A dataset file is missing or unreadable. ``path`` is the file, ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MissingDatasetFile(DatasetFileError, FileNotFoundError):
    """A file the dataset layout needs does not exist."""

    def __init__(self, path: str | Path, reason: str = "no such file"):
        super().__init__(path, reason)


class CorruptDatasetFile(DatasetFileError):
    """A file exists but cannot be parsed or decoded."""


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else :class:`MissingDatasetFile` naming ``what`` it should be."""
    if not path.is_file():
        raise MissingDatasetFile(path, f"missing {what}")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise MissingDatasetFile(path, f"missing {what} (not a directory)")
    return path


@dataclass(frozen=True)
class ClipSampling:
    """How clips are cut from a video (see the module docstring for the procedure).

    Args:
        frames: T, frames per clip.  rate: decoded frames between two sampled frames.
        crop: output side (square).  clips, crops: test views (temporal positions x spatial crops).
        train_scale: train short-side range ``(lo, hi)``; ``None`` = ``(crop*8/7, crop*10/7)``.
        flip: random horizontal flips in training.  mean, std: pixel normalisation.
        offset: SlowFast's ``use_offset`` test positions (default, as upstream SVFormer).
    """

    frames: int = 16
    rate: int = 4
    crop: int = 224
    clips: int = 5
    crops: int = 3
    train_scale: tuple[int, int] | None = None
    flip: bool = True
    mean: float = 0.45
    std: float = 0.225
    offset: bool = True

    def __post_init__(self) -> None:
        for name in ("frames", "rate", "crop", "clips", "crops"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ClipSampling.{name} must be a positive int, got {v!r}")
        if self.crops not in (1, 3):
            raise ValueError(f"ClipSampling.crops must be 1 (centre) or 3 (left/centre/right), got {self.crops}")
        lo, hi = self.scale_range
        if not self.crop <= lo <= hi:
            raise ValueError(f"train_scale {self.train_scale} must satisfy crop <= lo <= hi")

    @classmethod
    def for_model(cls, cfg, **overrides) -> ClipSampling:
        """Frames and crop from a model config (``cfg.frames``, ``cfg.img_size``)."""
        return cls(**({"frames": cfg.frames, "crop": cfg.img_size} | overrides))

    @property
    def span(self) -> int:
        """Decoded frames one clip covers."""
        return (self.frames - 1) * self.rate + 1

    @property
    def scale_range(self) -> tuple[int, int]:
        if self.train_scale is not None:
            return int(self.train_scale[0]), int(self.train_scale[1])
        return round(self.crop * 8 / 7), round(self.crop * 10 / 7)

    @property
    def views(self) -> int:
        return self.clips * self.crops

    def to_dict(self) -> dict:
        return asdict(self)

    # -- temporal -------------------------------------------------------------------------
    def start(self, num_frames: int, clip: int | None, rng: random.Random | None = None) -> int:
        """First frame of test clip ``clip`` (``None``: a random train offset)."""
        delta = max(num_frames - self.span, 0)
        if clip is None:
            return (rng or random).randint(0, delta)
        if not 0 <= clip < self.clips:
            raise ValueError(f"clip index {clip} not in [0, {self.clips})")
        if not self.offset:
            return (delta * clip) // self.clips
        return delta // 2 if self.clips == 1 else clip * (delta // (self.clips - 1))

    def indices(self, num_frames: int, start: int) -> list[int]:
        if num_frames < 1:
            raise ValueError("a video with no frames")
        return [min(start + i * self.rate, num_frames - 1) for i in range(self.frames)]

    # -- spatial --------------------------------------------------------------------------
    def resize_short(self, x: torch.Tensor, short: int) -> torch.Tensor:
        """``(..., H, W)`` float resized so that ``min(H, W) == short`` (aspect kept)."""
        h, w = x.shape[-2:]
        if min(h, w) == short:
            return x
        if h <= w:
            size = (short, max(short, round(w * short / h)))
        else:
            size = (max(short, round(h * short / w)), short)
        lead = x.shape[:-3]
        y = F.interpolate(x.reshape(-1, *x.shape[-3:]), size=size, mode="bilinear", align_corners=False,
                          antialias=True)
        return y.reshape(*lead, *y.shape[-3:])

    def crop_at(self, x: torch.Tensor, pos: int) -> torch.Tensor:
        """Crop ``crop x crop`` at position ``pos`` in ``0..2`` (left/top, centre, right/bottom)."""
        h, w = x.shape[-2:]
        c = self.crop
        y0, x0 = (h - c) // 2, (w - c) // 2
        if pos != 1:
            if w >= h:
                x0 = 0 if pos == 0 else w - c
            else:
                y0 = 0 if pos == 0 else h - c
        return x[..., y0:y0 + c, x0:x0 + c]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x / 255.0 - self.mean) / self.std

    def test_views(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """All test views ``(clips*crops, 3, T, crop, crop)`` of decoded RGB ``frames (N, H, W, 3)``."""
        video = torch.as_tensor(frames)
        n = video.shape[0]
        out = []
        for k in range(self.clips):
            clip = self._frames(video, self.indices(n, self.start(n, k)))
            clip = self.resize_short(clip, self.crop)
            positions = [1] if self.crops == 1 else [0, 1, 2]
            out.extend(self.crop_at(clip, p) for p in positions)
        return self.normalize(torch.stack(out)).transpose(1, 2).contiguous()

    def train_view(self, frames: np.ndarray | torch.Tensor, rng: random.Random | None = None) -> torch.Tensor:
        """One random training view ``(3, T, crop, crop)`` of decoded RGB ``frames (N, H, W, 3)``."""
        rng = rng or random
        video = torch.as_tensor(frames)
        n = video.shape[0]
        clip = self._frames(video, self.indices(n, self.start(n, None, rng)))
        lo, hi = self.scale_range
        clip = self.resize_short(clip, rng.randint(lo, hi))
        h, w = clip.shape[-2:]
        y0, x0 = rng.randint(0, h - self.crop), rng.randint(0, w - self.crop)
        clip = clip[..., y0:y0 + self.crop, x0:x0 + self.crop]
        if self.flip and rng.random() < 0.5:
            clip = clip.flip(-1)
        return self.normalize(clip).transpose(0, 1).contiguous()

    @staticmethod
    def _frames(video: torch.Tensor, idx: Sequence[int]) -> torch.Tensor:
        """``(T, 3, H, W)`` float32 frames ``idx`` of a ``(N, H, W, 3)`` uint8 video."""
        return video[list(idx)].permute(0, 3, 1, 2).float()


def read_video(path: str | Path, max_short: int | None = None) -> np.ndarray:
    """All frames of a video file as uint8 RGB ``(N, H, W, 3)``, decoded with PyAV.

    ``max_short``: frames whose short side is longer are scaled down while decoding (FFmpeg's
    swscale, area interpolation, aspect kept) so that it equals ``max_short``; this keeps
    memory small for large videos (NTU's 1920x1080) and is never an upscale.

    Raises :class:`MissingDatasetFile` when the file does not exist and :class:`CorruptDatasetFile`
    when it cannot be opened or has no decodable video frame.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDatasetFile(path, "missing video file")
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a project dependency
        raise ImportError("reading videos needs PyAV: pip install av") from e
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise CorruptDatasetFile(path, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                h, w = frame.height, frame.width
                if max_short is not None and min(h, w) > max_short:
                    k = max_short / min(h, w)
                    frame = frame.reformat(width=max(max_short, round(w * k)), height=max(max_short, round(h * k)),
                                           format="rgb24", interpolation="AREA")
                frames.append(frame.to_ndarray(format="rgb24"))
    except DatasetFileError:
        raise
    except (av.FFmpegError, ValueError, OSError) as e:
        if not frames:
            raise CorruptDatasetFile(path, f"cannot decode video ({type(e).__name__}: {e})") from None
        # a truncated tail: keep the frames decoded before it
    if not frames:
        raise CorruptDatasetFile(path, "no decodable video frames")
    return np.stack(frames)


@dataclass
class VideoItem:
    """One labelled video (or event segment): a stable ``key`` (relative path), the file, the label."""

    key: str
    path: Path
    label: int
    extra: dict = field(default_factory=dict)


class ClipDataset(Dataset):
    """Base of the dataset readers: a list of :class:`VideoItem` and a :class:`ClipSampling`.

    ``mode="test"``: ``ds[i]`` is ``(views (V, C, T, H, W), label)`` with all test views;
    ``mode="train"``: ``(clip (C, T, H, W), label)``, one random view (``seed`` for repeatable runs).
    Subclasses set ``items`` and ``classes`` and may override :meth:`load` (decode one item).
    """

    name = "videos"
    items: list[VideoItem]
    classes: list[str]

    def __init__(self, sampling: ClipSampling | None = None, mode: str = "test", seed: int | None = None):
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        self.sampling = sampling or ClipSampling()
        self.mode = mode
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def key(self, i: int) -> str:
        return self.items[i].key

    def load(self, item: VideoItem) -> np.ndarray:
        """Decoded frames of ``item``, scaled down at decode time to the largest short side needed."""
        s = self.sampling
        return read_video(item.path, s.scale_range[1] if self.mode == "train" else s.crop)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        item = self.items[i]
        frames = self.load(item)
        if self.mode == "train":
            return self.sampling.train_view(frames, self.rng), item.label
        return self.sampling.test_views(frames), item.label

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} items, {self.num_classes} classes, mode={self.mode!r})"


def spread(n: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(n)`` (all of them when ``count >= n``)."""
    if count >= n:
        return list(range(n))
    return [math.floor(i * n / count) for i in range(count)]
