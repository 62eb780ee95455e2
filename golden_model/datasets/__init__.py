"""Readers for the datasets SVFormer and SpikeVideoFormer are trained on, in their published layouts.

=============  =====================================  ==========================================
name           module                                 layout
=============  =====================================  ==========================================
``ucf101``     :mod:`.ucf101` (:class:`UCF101`)        ``.avi`` tree + ``ucfTrainTestlist/``
``ntu60``      :mod:`.ntu` (:class:`NTURGBD60`)        ``SsssCcccPpppRrrrAaaa_rgb.avi``
``dvs128``     :mod:`.dvs128` (:class:`DVS128Gesture`) ``.aedat`` + ``_labels.csv`` + trial lists
``kinetics``   :mod:`.kinetics` (:class:`Kinetics`)    video folder + K400-style csv
=============  =====================================  ==========================================

Clip sampling (upstream: 16 frames, rate 4, 224 crop, 5 x 3 test views) is
:class:`.common.ClipSampling`. :func:`open_dataset` builds a reader from a ``"name:PATH"`` spec
(what ``spikevid eval --data`` takes). See ``docs/datasets.md``.
"""

from __future__ import annotations

from pathlib import Path

from .common import (
    ClipDataset,
    ClipSampling,
    CorruptDatasetFile,
    DatasetFileError,
    MissingDatasetFile,
    read_video,
)

DATASETS = ("ucf101", "ntu60", "dvs128", "kinetics")
NUM_CLASSES = {"ucf101": 101, "ntu60": 60, "dvs128": 11, "kinetics": 400}

__all__ = [
    "DATASETS",
    "NUM_CLASSES",
    "ClipDataset",
    "ClipSampling",
    "CorruptDatasetFile",
    "DatasetFileError",
    "MissingDatasetFile",
    "open_dataset",
    "parse_spec",
    "read_video",
]


def parse_spec(spec: str) -> tuple[str, Path]:
    """``"ucf101:/data/UCF101"`` -> ``("ucf101", Path("/data/UCF101"))``."""
    name, sep, path = spec.partition(":")
    name = name.strip().lower()
    if not sep or not path or name not in DATASETS:
        raise ValueError(f"dataset spec must be NAME:PATH with NAME one of {', '.join(DATASETS)}, got {spec!r}")
    return name, Path(path).expanduser()


def open_dataset(spec: str, subset: str = "test", split: str | int | None = None, *,
                 sampling: ClipSampling | None = None, annotations: str | Path | None = None,
                 mode: str | None = None, skip_missing: bool = False, seed: int | None = None,
                 dvs_binary: bool = False, dvs_split_by: str = "number") -> ClipDataset:
    """The reader named by ``spec`` for ``subset`` ``"train"`` or ``"test"``.

    ``split``: UCF101 fold (1, 2, 3; default 1), NTU protocol (``xsub`` default, ``xview``);
    unused for DVS128 Gesture and Kinetics. ``annotations``: UCF101's ``ucfTrainTestlist`` folder
    or the Kinetics csv (default ``<root>/train.csv`` for subset train, ``<root>/validate.csv`` for
    test; when the csv's ``split`` column is filled only rows with ``train`` / ``validate`` are
    kept). ``sampling`` sets frames and crop (for DVS128 Gesture: frames and the frame side).
    """
    name, root = parse_spec(spec)
    sampling = sampling or ClipSampling()
    if name == "ucf101":
        from .ucf101 import UCF101
        fold = 1 if split is None else int(split)
        return UCF101(root, fold, subset, sampling, mode, splits_dir=annotations, seed=seed)
    if name == "ntu60":
        from .ntu import NTURGBD60
        return NTURGBD60(root, str(split or "xsub"), subset, sampling, mode, seed=seed)
    if name == "dvs128":
        from .dvs128 import DVS128Gesture
        return DVS128Gesture(root, subset, sampling.frames, sampling.crop, dvs_split_by, dvs_binary, mode, seed)
    from .kinetics import Kinetics, read_annotations
    csv_split = "train" if subset == "train" else "validate"
    csv_path = Path(annotations) if annotations is not None else root / f"{csv_split}.csv"
    rows = read_annotations(csv_path)
    use_split = csv_split if any(r["split"] for r in rows) else None
    return Kinetics(root, csv_path, use_split, sampling, mode or subset, missing="skip" if skip_missing else "error",
                    seed=seed)
