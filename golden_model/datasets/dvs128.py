"""DVS128 Gesture (IBM, Amir et al. CVPR 2017): AEDAT 3.1 event files, per-file label csv, trial lists.

Layout of ``DvsGesture/``::

    user01_fluorescent.aedat               AEDAT 3.1 events of one recording
    user01_fluorescent_labels.csv          class,startTime_usec,endTime_usec   (class 1..11)
    trials_to_train.txt                    one .aedat name per line
    trials_to_test.txt

**AEDAT 3.1** (the iniVation/cAER format): text header lines starting with ``#`` (the first is
``#!AER-DAT3.1``, the last ``#!END-HEADER``), then packets. A packet is a 28-byte little-endian
header ``int16 eventType, int16 eventSource, int32 eventSize, int32 eventTSOffset,
int32 eventTSOverflow, int32 eventCapacity, int32 eventNumber, int32 eventValid`` followed by
``eventCapacity * eventSize`` bytes of events. Polarity events (``eventType == 1``) are 8 bytes:
``uint32 data, int32 timestamp`` (microseconds) with, in ``data``, bit 0 the valid mark, bit 1
the polarity (1 = ON), bits 2-16 the y address and bits 17-31 the x address (15 bits each). The
full timestamp is ``(eventTSOverflow << 31) | timestamp``. Source of the bit layout: libcaer's
``include/libcaer/events/polarity.h`` (``POLARITY_SHIFT 1``, ``POLARITY_Y_ADDR_SHIFT 2``,
``POLARITY_X_ADDR_SHIFT 17``, masks ``0x7FFF``; bit 0 the valid mark per ``common.h``) and the
packet header of ``common.h``; SpikingJelly's ``load_aedat_v3``
(``spikingjelly/datasets/__init__.py``) reads DVS128 Gesture with the same shifts. Other event
types are skipped. Only the first ``eventNumber`` events of a packet and only valid events
(bit 0 set) are kept (SpikingJelly keeps all ``eventCapacity`` events regardless of the valid
mark; in the DVS128 Gesture files the two agree as far as we know - not verified on the real
files here). The (0, 0) address is the top-left pixel.

**Samples**: every row of a ``_labels.csv`` is one sample: the events with
``startTime_usec <= t < endTime_usec``, label ``class - 1``. They are binned into ``frames`` frames
of 2 channels (channel 0 = OFF, 1 = ON polarity, as SpikingJelly) at 128 x 128:
``split_by="number"`` cuts the segment's events into ``frames`` runs of (nearly) equal count
(SpikingJelly's ``integrate_events_by_fixed_frames_number``, ``split_by='number'``); ``"time"`` into
equal durations of ``[start, end)``. ``binary=True`` gives 0/1 frames, else event counts.
``size`` other than 128 resizes with area averaging, scaled by ``(128 / size)^2`` so counts keep
their total (then thresholded ``> 0`` when binary). A sample is ``(2, T, size, size)`` float32;
in ``mode="test"`` ``ds[i]`` gives one view ``(1, 2, T, size, size)``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .common import ClipDataset, CorruptDatasetFile, VideoItem, require_dir, require_file

SENSOR = 128
NUM_CLASSES = 11
CLASSES = ("hand_clapping", "right_hand_wave", "left_hand_wave", "right_arm_clockwise",
           "right_arm_counter_clockwise", "left_arm_clockwise", "left_arm_counter_clockwise", "arm_roll",
           "air_drums", "air_guitar", "other_gestures")
HEADER_BYTES = 28
POLARITY_EVENT = 1
_HEADER = np.dtype([("type", "<i2"), ("source", "<i2"), ("size", "<i4"), ("ts_offset", "<i4"),
                    ("ts_overflow", "<i4"), ("capacity", "<i4"), ("number", "<i4"), ("valid", "<i4")])


def read_aedat3(path: str | Path) -> dict[str, np.ndarray]:
    """Polarity events of an AEDAT 3.x file: ``{"t": int64 us, "x", "y": int16, "p": int8 (0/1)}``.

    Raises :class:`MissingDatasetFile` / :class:`CorruptDatasetFile` (naming the file) for a
    missing file, a header that is not ``#!AER-DAT3``, or a truncated or inconsistent packet.
    """
    path = Path(path)
    require_file(path, "AEDAT event file")
    raw = path.read_bytes()
    if not raw.startswith(b"#!AER-DAT3"):
        raise CorruptDatasetFile(path, f"not an AEDAT 3.x file (first bytes {raw[:12]!r}, expected b'#!AER-DAT3')")
    pos = 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise CorruptDatasetFile(path, "header has no '#!END-HEADER' line")
        line = raw[pos:end + 1]
        pos = end + 1
        if not line.startswith(b"#"):
            raise CorruptDatasetFile(path, f"header line without '#' before '#!END-HEADER': {line[:40]!r}")
        if line.rstrip(b"\r\n") == b"#!END-HEADER":
            break
    ts, xs, ys, ps = [], [], [], []
    while pos < len(raw):
        if len(raw) - pos < HEADER_BYTES:
            raise CorruptDatasetFile(path, f"truncated packet header at byte {pos}")
        h = np.frombuffer(raw, _HEADER, 1, pos)[0]
        size, cap, number = int(h["size"]), int(h["capacity"]), int(h["number"])
        if size <= 0 or cap < 0 or not 0 <= number <= cap:
            raise CorruptDatasetFile(path, f"bad packet header at byte {pos} (eventSize {size}, eventCapacity "
                                           f"{cap}, eventNumber {number})")
        body = pos + HEADER_BYTES
        pos = body + cap * size
        if pos > len(raw):
            raise CorruptDatasetFile(path, f"truncated packet at byte {body - HEADER_BYTES}: {cap} x {size} bytes "
                                           f"announced, {len(raw) - body} left")
        if int(h["type"]) != POLARITY_EVENT or number == 0:
            continue
        if size != 8 or int(h["ts_offset"]) != 4:
            raise CorruptDatasetFile(path, f"polarity packet at byte {body - HEADER_BYTES} has eventSize {size}, "
                                           f"eventTSOffset {int(h['ts_offset'])} (expected 8, 4)")
        ev = np.frombuffer(raw, "<u4", 2 * number, body).reshape(number, 2)
        data = ev[:, 0]
        valid = (data & 1).astype(bool)
        data = data[valid]
        ts.append((np.int64(int(h["ts_overflow"])) << 31) | ev[valid, 1].astype(np.int64))
        xs.append(((data >> 17) & 0x7FFF).astype(np.int16))
        ys.append(((data >> 2) & 0x7FFF).astype(np.int16))
        ps.append(((data >> 1) & 1).astype(np.int8))
    cat = lambda a, dt: np.concatenate(a) if a else np.zeros(0, dt)  # noqa: E731
    return {"t": cat(ts, np.int64), "x": cat(xs, np.int16), "y": cat(ys, np.int16), "p": cat(ps, np.int8)}


def read_labels(path: Path) -> list[tuple[int, int, int]]:
    """``(label 0..10, start_us, end_us)`` rows of a ``_labels.csv``."""
    require_file(path, "DVS128 Gesture label file")
    rows = []
    with open(path, newline="") as f:
        for n, r in enumerate(csv.reader(f), 1):
            if not r or (n == 1 and not r[0].strip().isdigit()):
                continue  # header "class,startTime_usec,endTime_usec"
            try:
                c, s, e = (int(v) for v in r[:3])
            except ValueError:
                raise CorruptDatasetFile(path, f"line {n}: expected class,startTime_usec,endTime_usec, "
                                               f"got {r}") from None
            if not 1 <= c <= NUM_CLASSES or e <= s:
                raise CorruptDatasetFile(path, f"line {n}: class {c} not in 1..{NUM_CLASSES} or end <= start")
            rows.append((c - 1, s, e))
    return rows


def events_to_frames(ev: dict[str, np.ndarray], start: int, end: int, frames: int, split_by: str = "number",
                     binary: bool = False, size: int = SENSOR) -> torch.Tensor:
    """Events with ``start <= t < end`` binned into ``(2, frames, size, size)`` float32 (module docstring)."""
    t = ev["t"]
    sel = (t >= start) & (t < end)
    x, y, p, t = (ev[k][sel].astype(np.int64) for k in ("x", "y", "p", "t"))
    inside = (x < SENSOR) & (y < SENSOR)
    x, y, p, t = x[inside], y[inside], p[inside], t[inside]
    n = len(t)
    if split_by == "number":
        bounds = (np.arange(frames + 1) * n) // frames
        fidx = np.searchsorted(bounds, np.arange(n), side="right") - 1
    elif split_by == "time":
        fidx = ((t - start) * frames) // (end - start)
    else:
        raise ValueError(f"split_by must be 'number' or 'time', got {split_by!r}")
    flat = ((p * frames + fidx) * SENSOR + y) * SENSOR + x
    counts = np.bincount(flat, minlength=2 * frames * SENSOR * SENSOR).astype(np.float32)
    out = torch.from_numpy(counts).view(2, frames, SENSOR, SENSOR)
    if size != SENSOR:
        out = F.interpolate(out, size=(size, size), mode="area") * (SENSOR / size) ** 2
    return (out > 0).float() if binary else out


class DVS128Gesture(ClipDataset):
    """DVS128 Gesture, subset ``"train"`` (``trials_to_train.txt``) or ``"test"``.

    Args:
        root: the ``DvsGesture`` folder.  frames: T.  size: output side (128 = no resize).
        split_by: ``"number"`` or ``"time"``.  binary: 0/1 frames instead of counts.
    """

    name = "dvs128"
    classes = list(CLASSES)

    def __init__(self, root: str | Path, subset: str = "test", frames: int = 16, size: int = SENSOR,
                 split_by: str = "number", binary: bool = False, mode: str | None = None, seed: int | None = None):
        super().__init__(None, mode or subset, seed)
        if subset not in ("train", "test"):
            raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
        if split_by not in ("number", "time"):
            raise ValueError(f"split_by must be 'number' or 'time', got {split_by!r}")
        self.root = require_dir(Path(root), "DVS128 Gesture folder")
        self.subset, self.frames, self.size, self.split_by, self.binary = subset, frames, size, split_by, binary
        trials = require_file(self.root / f"trials_to_{subset}.txt", f"DVS128 Gesture {subset} trial list")
        self.items = []
        for name in (ln.strip() for ln in trials.read_text().splitlines()):
            if not name:
                continue
            aedat = self.root / name
            require_file(aedat, "AEDAT event file")
            for k, (label, s, e) in enumerate(read_labels(aedat.with_name(aedat.stem + "_labels.csv"))):
                self.items.append(VideoItem(f"{name}#{k}", aedat, label, {"start": s, "end": e}))
        if not self.items:
            raise CorruptDatasetFile(trials, "no labelled segments")
        self._cache: tuple[Path, dict] | None = None

    def events(self, path: Path) -> dict[str, np.ndarray]:
        if self._cache is None or self._cache[0] != path:
            self._cache = (path, read_aedat3(path))
        return self._cache[1]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        it = self.items[i]
        x = events_to_frames(self.events(it.path), it.extra["start"], it.extra["end"], self.frames, self.split_by,
                             self.binary, self.size)
        return (x if self.mode == "train" else x[None]), it.label
