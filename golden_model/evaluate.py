"""Evaluate float, integer and accelerator paths of a model on a real dataset (``spikevid eval``).

* **Checkpoints** (:func:`load_model`): a spikevid checkpoint (``golden_model.train`` format: the
  model name and config come from the file) or an upstream one (SVFormer ``.pyth`` /
  SpikeVideoFormer ``.pth``) loaded by name with :func:`golden_model.checkpoints.load_upstream`
  into ``build_model(name, num_classes=<the dataset's>)``; upstream ``head_kd.*`` entries are skipped.
* **Multi-view ensembling**: every view of a video (5 clips x 3 crops upstream) is run, the
  **softmax probabilities are averaged over the views** (SlowFast's multi-view test sums softmax
  outputs) and top-1 / top-5 are taken on the average. Integer logits are converted to real values
  (``logits / 2^logit_frac_bits``) before the softmax.
* **Calibration** of the integer model (:func:`calibration_clips`): ``count`` videos of the
  dataset's *train* subset spread evenly over its list, one centre view each (centre clip,
  centre crop), so the choice is deterministic; ``spikevid eval`` uses 16 by default.
* **Resumable records** (:class:`Records`): one JSON line per video appended (and flushed) as
  soon as it is done, after a first line that records the setup; a rerun with the same setup
  skips the videos already in the file, a different setup is an error.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .datasets.common import ClipDataset, spread

RECORDS_FORMAT = "spikevid-eval-records-v1"


def load_model(checkpoint: str | os.PathLike, model_name: str | None, num_classes: int | None,
               trust: bool = False) -> tuple[nn.Module, dict]:
    """``(float model in eval mode, meta)`` from a spikevid or an upstream checkpoint (module docstring).

    ``meta["source"]`` is ``"spikevid"`` or ``"upstream"``; ``trust`` lets ``torch.load`` unpickle
    more than tensors (SpikeVideoFormer training checkpoints pickle their arguments).
    """
    from .checkpoints import load_upstream
    from .train import CHECKPOINT_FORMAT, load_checkpoint
    from .zoo import MODEL_NAMES, build_model

    path = Path(checkpoint)
    if not path.is_file() and str(checkpoint) in MODEL_NAMES:
        model, meta = load_checkpoint(str(checkpoint))     # a shipped model name
        return model, meta | {"source": "spikevid"}
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file {str(path)!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as e:  # noqa: BLE001 - report any unpickling failure with the path
        hint = " (if you trust the file, pass --trust-checkpoint)" if not trust else ""
        raise ValueError(f"{path}: cannot load checkpoint ({type(e).__name__}: {str(e)[:300]}){hint}") from None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        model, meta = load_checkpoint(path)
        if model_name is not None and meta.get("model") != model_name:
            raise ValueError(f"{path} holds {meta.get('model')!r}, not --model {model_name!r}")
        return model, meta | {"source": "spikevid"}
    if model_name is None:
        raise ValueError(f"{path} is not a spikevid checkpoint: say which model it is (--model svformer, ...)")
    model = build_model(model_name, num_classes=num_classes)
    report = load_upstream(model, obj, ignore=("head_kd.",))
    model.eval()
    return model, {"model": model_name, "config": model.cfg.to_dict(), "path": str(path), "source": "upstream",
                   "load_report": report.summary()}


def calibration_clips(train: ClipDataset, count: int, batch: int = 8) -> list[torch.Tensor]:
    """``count`` clips from the train subset ``train`` (module docstring), in batches of ``batch``."""
    from dataclasses import replace

    if count < 1:
        raise ValueError(f"calibration needs at least 1 clip, got {count}")
    saved_sampling, saved_mode = train.sampling, train.mode
    train.sampling, train.mode = replace(train.sampling, clips=1, crops=1), "test"
    try:
        clips = [train[i][0][0] for i in spread(len(train), count)]
    finally:
        train.sampling, train.mode = saved_sampling, saved_mode
    return [torch.stack(clips[lo:lo + batch]) for lo in range(0, len(clips), batch)]


def ensemble(probs: torch.Tensor, k: int = 5) -> tuple[list[int], list[float]]:
    """Top-``k`` classes and probabilities of the mean of ``probs (V, classes)`` over views."""
    mean = probs.double().mean(0)
    top = mean.topk(min(k, mean.numel()))
    return [int(i) for i in top.indices], [round(float(p), 6) for p in top.values]


@dataclass
class Accuracy:
    top1: float
    top5: float
    videos: int

    def to_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "videos": self.videos}


def accuracy(records: list[dict], path: str) -> Accuracy | None:
    """Top-1/top-5 of ``records`` for result ``path`` (``"float"``, ``"int"`` or ``"device"``)."""
    rows = [r for r in records if path in r]
    if not rows:
        return None
    t1 = sum(r[path]["top5"][0] == r["label"] for r in rows) / len(rows)
    t5 = sum(r["label"] in r[path]["top5"] for r in rows) / len(rows)
    return Accuracy(t1, t5, len(rows))


class Records:
    """Per-video results in a JSON-lines file: a setup line, then one line per video.

    Opening an existing file with another setup raises ``ValueError``; ``done`` holds the keys
    already recorded. A torn last line (an interrupted write) is dropped.
    """

    def __init__(self, path: str | os.PathLike, setup: dict):
        self.path = Path(path)
        self.setup = setup
        self.rows: list[dict] = []
        if self.path.is_file() and self.path.stat().st_size:
            lines = self.path.read_text().splitlines()
            parsed = []
            for n, line in enumerate(lines):
                try:
                    parsed.append(json.loads(line))
                except json.JSONDecodeError:
                    if n != len(lines) - 1:
                        raise ValueError(f"{self.path}: line {n + 1} is not JSON; not a records file") from None
            head = parsed[0] if parsed else {}
            if head.get("format") != RECORDS_FORMAT:
                raise ValueError(f"{self.path}: not a {RECORDS_FORMAT} file")
            if head.get("setup") != json.loads(json.dumps(setup)):
                diff = sorted(k for k in set(setup) | set(head.get("setup", {}))
                              if json.dumps(setup.get(k)) != json.dumps(head.get("setup", {}).get(k)))
                raise ValueError(f"{self.path} was recorded with another setup (differs in {', '.join(diff)}); "
                                 "use another --out or delete the file to start again")
            self.rows = parsed[1:]
            good = "\n".join(lines[:1 + len(self.rows)]) + "\n"
            if good != self.path.read_text():
                self.path.write_text(good)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"format": RECORDS_FORMAT, "setup": setup}) + "\n")
        self.done = {r["key"] for r in self.rows}

    def append(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        self.rows.append(row)
        self.done.add(row["key"])
