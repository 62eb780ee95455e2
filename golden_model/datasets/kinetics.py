"""Kinetics-style datasets (K400 and the like): a video folder plus an annotation csv.

The csv is the official K400 annotation format, with a header::

    label,youtube_id,time_start,time_end,split
    abseiling,--3ouPhoBNo,25,35,train

and a video of row ``r`` is named ``<youtube_id>_<time_start:06d>_<time_end:06d>.<ext>`` (``.mp4``,
``.webm``, ``.mkv``, ``.avi``), anywhere under the video folder (flat, or in per-class or per-split
subfolders: the folder is searched recursively once). The label index is the position of the
class name in the sorted class names of the csv (``classes=`` overrides, e.g. to share one class
list between the train and validate csv files). Rows whose ``split`` column differs from ``split``
are skipped when ``split`` is given.

K400 downloads usually miss some videos: ``missing="error"`` (default) raises
:class:`MissingDatasetFile` naming the first missing video and the count; ``missing="skip"``
drops them and lists their keys in ``ds.missing``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .common import (
    VIDEO_EXTENSIONS,
    ClipDataset,
    ClipSampling,
    CorruptDatasetFile,
    MissingDatasetFile,
    VideoItem,
    require_dir,
    require_file,
)

COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def video_stem(youtube_id: str, start: int, end: int) -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}"


def read_annotations(path: Path) -> list[dict]:
    """Rows of a Kinetics csv: ``label``, ``youtube_id``, ``time_start``, ``time_end`` (ints), ``split``."""
    require_file(path, "Kinetics annotation csv")
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(COLUMNS) <= set(reader.fieldnames):
            raise CorruptDatasetFile(path, f"expected a header with columns {','.join(COLUMNS)}[,split], got "
                                           f"{reader.fieldnames}")
        for n, r in enumerate(reader, 2):
            try:
                rows.append({"label": r["label"].strip(), "youtube_id": r["youtube_id"].strip(),
                             "time_start": int(float(r["time_start"])), "time_end": int(float(r["time_end"])),
                             "split": (r.get("split") or "").strip()})
            except (TypeError, ValueError, AttributeError):
                raise CorruptDatasetFile(path, f"line {n}: cannot parse {r}") from None
    if not rows:
        raise CorruptDatasetFile(path, "no annotation rows")
    return rows


class Kinetics(ClipDataset):
    """Videos of a Kinetics csv ``annotations`` found under ``root``.

    Args:
        root: video folder.  annotations: the csv.  split: keep rows with this ``split`` value
            (``None``: all rows).  classes: class names (default: sorted names of the csv).
        missing: ``"error"`` or ``"skip"`` (see the module docstring).
    """

    name = "kinetics"

    def __init__(self, root: str | Path, annotations: str | Path, split: str | None = None,
                 sampling: ClipSampling | None = None, mode: str = "test", classes: list[str] | None = None,
                 missing: str = "error", seed: int | None = None):
        super().__init__(sampling, mode, seed)
        if missing not in ("error", "skip"):
            raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
        self.root = require_dir(Path(root), "Kinetics video folder")
        self.annotations = Path(annotations)
        rows = read_annotations(self.annotations)
        self.classes = list(classes) if classes is not None else sorted({r["label"] for r in rows})
        lookup = {c: i for i, c in enumerate(self.classes)}
        files = {p.stem: p for p in sorted(self.root.rglob("*")) if p.suffix.lower() in VIDEO_EXTENSIONS}
        self.items, self.missing = [], []
        for r in rows:
            if split is not None and r["split"] != split:
                continue
            if r["label"] not in lookup:
                raise CorruptDatasetFile(self.annotations, f"class {r['label']!r} is not in the class list")
            stem = video_stem(r["youtube_id"], r["time_start"], r["time_end"])
            path = files.get(stem)
            if path is None:
                self.missing.append(stem)
                continue
            self.items.append(VideoItem(str(path.relative_to(self.root)), path, lookup[r["label"]]))
        if self.missing and missing == "error":
            raise MissingDatasetFile(self.root / f"{self.missing[0]}.mp4",
                                     f"missing Kinetics video ({len(self.missing)} of the csv's videos are not "
                                     f"under {self.root}; missing='skip' / --skip-missing leaves them out)")
        if not self.items:
            raise CorruptDatasetFile(self.annotations, f"no videos of split {split!r} found under {self.root}")
