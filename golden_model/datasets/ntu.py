"""NTU RGB+D 60 RGB videos (``nturgb+d_rgb/SsssCcccPpppRrrrAaaa_rgb.avi``).

The file name carries setup ``S``, camera ``C``, performer (subject) ``P``, replication ``R`` and
action ``A`` (1..60); the label is ``A - 1``. Files with an action above 60 (NTU-120) are left out.
Videos are found recursively under ``root``. Standard evaluation protocols (Shahroudy et al.,
CVPR 2016):

* ``xsub`` (cross-subject): training subjects 1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25,
  27, 28, 31, 34, 35, 38; the other subjects test.
* ``xview`` (cross-view): cameras 2 and 3 train, camera 1 tests.

Every matching video is used (the samples NTU flags for missing skeletons have RGB videos and
are kept); ``exclude=`` (names like ``"S001C002P005R002A008"``) drops chosen samples.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from .common import ClipDataset, ClipSampling, CorruptDatasetFile, VideoItem, require_dir

XSUB_TRAIN_SUBJECTS = frozenset((1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38))
XVIEW_TRAIN_CAMERAS = frozenset((2, 3))
PROTOCOLS = ("xsub", "xview")
NUM_ACTIONS = 60
NAME_RE = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})_rgb\.avi$")


def parse_name(name: str) -> dict[str, int] | None:
    """``{"setup", "camera", "subject", "replication", "action"}`` of an NTU file name, or None."""
    m = NAME_RE.match(name)
    if m is None:
        return None
    return dict(zip(("setup", "camera", "subject", "replication", "action"), map(int, m.groups()), strict=True))


def is_train(fields: dict[str, int], protocol: str) -> bool:
    if protocol == "xsub":
        return fields["subject"] in XSUB_TRAIN_SUBJECTS
    return fields["camera"] in XVIEW_TRAIN_CAMERAS


class NTURGBD60(ClipDataset):
    """NTU RGB+D 60, protocol ``"xsub"`` or ``"xview"``, subset ``"train"`` or ``"test"``.

    Action names are not in the files, so ``classes`` are ``"A001"`` .. ``"A060"``.
    """

    name = "ntu60"

    def __init__(self, root: str | Path, protocol: str = "xsub", subset: str = "test",
                 sampling: ClipSampling | None = None, mode: str | None = None, exclude: Iterable[str] = (),
                 seed: int | None = None):
        super().__init__(sampling, mode or subset, seed)
        if protocol not in PROTOCOLS:
            raise ValueError(f"NTU protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if subset not in ("train", "test"):
            raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
        self.root = require_dir(Path(root), "NTU RGB+D video folder")
        self.protocol, self.subset = protocol, subset
        self.classes = [f"A{a:03d}" for a in range(1, NUM_ACTIONS + 1)]
        drop = {e.removesuffix("_rgb.avi") for e in exclude}
        want_train = subset == "train"
        self.items = []
        for path in sorted(self.root.rglob("*_rgb.avi")):
            f = parse_name(path.name)
            if f is None or f["action"] > NUM_ACTIONS or path.name.removesuffix("_rgb.avi") in drop:
                continue
            if f["action"] < 1:
                raise CorruptDatasetFile(path, "action number 0 in the file name (expected 1..60)")
            if is_train(f, protocol) == want_train:
                self.items.append(VideoItem(str(path.relative_to(self.root)), path, f["action"] - 1, f))
        if not self.items:
            raise CorruptDatasetFile(self.root, f"no NTU RGB+D 60 videos (SsssCcccPpppRrrrAaaa_rgb.avi) of the "
                                                f"{protocol} {subset} subset under this folder")
