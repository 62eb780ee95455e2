"""UCF101 from the official release: the ``.avi`` tree and the ``ucfTrainTestlist/`` split files.

Layout (as unpacked from ``UCF101.rar`` and ``UCF101TrainTestSplits-RecognitionTask.zip``)::

    <root>/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi
    ...
    <root>/ucfTrainTestlist/classInd.txt          "1 ApplyEyeMakeup" ... "101 YoYo"
    <root>/ucfTrainTestlist/trainlist01.txt       "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    <root>/ucfTrainTestlist/testlist01.txt        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"

``ucfTrainTestlist/`` is looked for in ``<root>`` and beside it (``<root>/..``), or given as
``splits_dir``. Folds 1, 2, 3. The label is ``classInd - 1`` of the class folder in the list
line, matched case-insensitively (the release names the folder ``HandstandPushups`` and its
files ``v_HandStandPushups_*``); a train-list label that disagrees with the folder is an error.
"""

from __future__ import annotations

from pathlib import Path

from .common import ClipDataset, ClipSampling, CorruptDatasetFile, VideoItem, require_dir, require_file

SUBSETS = ("train", "test")
FOLDS = (1, 2, 3)


def find_splits_dir(root: Path, splits_dir: str | Path | None = None) -> Path:
    if splits_dir is not None:
        return require_dir(Path(splits_dir), "UCF101 split folder (ucfTrainTestlist)")
    for cand in (root / "ucfTrainTestlist", root.parent / "ucfTrainTestlist"):
        if cand.is_dir():
            return cand
    return require_dir(root / "ucfTrainTestlist", "UCF101 split folder (ucfTrainTestlist, also looked beside the root)")


def read_class_index(path: Path) -> list[str]:
    """Class names in label order from ``classInd.txt`` (``"<1-based index> <name>"`` lines)."""
    require_file(path, "UCF101 class index (classInd.txt)")
    names: dict[int, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise CorruptDatasetFile(path, f"line {n}: expected '<index> <ClassName>', got {line!r}")
        names[int(parts[0])] = parts[1]
    if sorted(names) != list(range(1, len(names) + 1)) or not names:
        raise CorruptDatasetFile(path, "class indices must be 1..N without gaps")
    return [names[i] for i in range(1, len(names) + 1)]


class UCF101(ClipDataset):
    """UCF101 split ``fold`` (1-3), ``subset`` ``"train"`` or ``"test"``.

    Args:
        root: the folder holding the 101 class folders.
        fold: split number 1, 2 or 3.  subset: ``"train"`` or ``"test"``.
        sampling: :class:`ClipSampling` (default upstream: 16 x rate 4, 224, 5 x 3 test views).
        mode: ``"test"`` (all views) or ``"train"`` (one random view); default: ``subset``.
        check_files: raise :class:`MissingDatasetFile` now if any listed video is missing.
    """

    name = "ucf101"

    def __init__(self, root: str | Path, fold: int = 1, subset: str = "test", sampling: ClipSampling | None = None,
                 mode: str | None = None, splits_dir: str | Path | None = None, check_files: bool = True,
                 seed: int | None = None):
        super().__init__(sampling, mode or subset, seed)
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
        if fold not in FOLDS:
            raise ValueError(f"UCF101 fold must be 1, 2 or 3, got {fold!r}")
        self.root = require_dir(Path(root), "UCF101 video folder")
        self.fold, self.subset = fold, subset
        sdir = find_splits_dir(self.root, splits_dir)
        self.classes = read_class_index(sdir / "classInd.txt")
        lookup = {c.lower(): i for i, c in enumerate(self.classes)}
        lst = require_file(sdir / f"{subset}list0{fold}.txt", f"UCF101 {subset} list")
        self.items = []
        for n, line in enumerate(lst.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            rel = parts[0].replace("\\", "/")
            folder = rel.split("/")[0]
            if "/" not in rel or folder.lower() not in lookup:
                raise CorruptDatasetFile(lst, f"line {n}: {rel!r} is not '<ClassName>/<video>.avi' of a known class")
            label = lookup[folder.lower()]
            if len(parts) > 1 and parts[1].isdigit() and int(parts[1]) - 1 != label:
                raise CorruptDatasetFile(lst, f"line {n}: label {parts[1]} disagrees with folder {folder!r} "
                                              f"(classInd {label + 1})")
            self.items.append(VideoItem(rel, self.root / rel, label))
        if not self.items:
            raise CorruptDatasetFile(lst, "no videos listed")
        if check_files:
            for it in self.items:
                require_file(it.path, "UCF101 video")
