"""Float model -> integer model, and the comparisons between them.

``quantize(model, calib_clips)`` picks the quantizer for the model's family. ``compare`` runs a
float and an integer model over a dataset and reports both accuracies, their agreement and the
integer model's run-to-run determinism.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

from .intlayers import IntModelBase
from .spikevideoformer import SpikeVideoFormer
from .svformer import SVFormer


def quantize(model: nn.Module, calib_clips: list[torch.Tensor]) -> IntModelBase:
    """The bit-accurate integer model of a float SVFormer or SpikeVideoFormer."""
    if isinstance(model, SVFormer):
        from .int_svformer import quantize_svformer
        return quantize_svformer(model, calib_clips)
    if isinstance(model, SpikeVideoFormer):
        from .int_spikevideoformer import quantize_spikevideoformer
        return quantize_spikevideoformer(model, calib_clips)
    raise TypeError(f"no quantizer for {type(model).__name__}; expected SVFormer or SpikeVideoFormer")


@dataclass
class Comparison:
    """Float vs integer model on one labelled set of clips."""

    clips: int
    float_acc: float
    int_acc: float
    agreement: float          # fraction of clips where both predict the same class
    deterministic: bool       # the integer logits were identical on a second run
    frac_bits: int

    @property
    def cost(self) -> float:
        """Accuracy points lost by quantisation (float - int), in percent."""
        return 100.0 * (self.float_acc - self.int_acc)

    def to_dict(self) -> dict:
        return asdict(self) | {"cost_points": self.cost}


@torch.inference_mode()
def compare(model: nn.Module, int_model: IntModelBase, clips: torch.Tensor, labels: torch.Tensor,
            batch_size: int = 50, progress: bool = True) -> Comparison:
    """Run both models over float ``clips (N, C, T, H, W)`` with ``labels (N,)``."""
    model.eval()
    f_pred, i_pred, first_logits = [], [], []
    for lo in tqdm(range(0, len(clips), batch_size), desc="float vs int", unit="batch", disable=not progress):
        x = clips[lo:lo + batch_size]
        f_pred.append(model(x).argmax(1))
        li = int_model(int_model.quantize_clip(x))
        i_pred.append(li.argmax(1))
        if lo == 0:
            first_logits = li
    again = int_model(int_model.quantize_clip(clips[:batch_size]))
    fp, ip = torch.cat(f_pred), torch.cat(i_pred)
    return Comparison(clips=len(clips), float_acc=float((fp == labels).float().mean()),
                      int_acc=float((ip == labels).float().mean()), agreement=float((fp == ip).float().mean()),
                      deterministic=bool(torch.equal(again, first_logits)), frac_bits=int_model.frac_bits)


@dataclass
class Golden:
    """A trained float model, its integer model and where they came from."""

    name: str
    float_model: nn.Module
    int_model: IntModelBase
    meta: dict
    calib_clips: int


def calibration_clips(meta: dict, count: int = 64, batch: int = 32) -> list[torch.Tensor]:
    """The first ``count`` clips of the training split the checkpoint was trained on, in batches."""
    from .data import SyntheticActions

    ds = meta.get("dataset", {})
    train = SyntheticActions("train", size=count, frames=ds.get("frames", 4), img_size=ds.get("img_size", 64),
                             seed=ds.get("seed", 0))
    return [train.batch(slice(lo, lo + batch))[0] for lo in range(0, count, batch)]


def load_golden(checkpoint: str, calib: int = 64) -> Golden:
    """Load a trained checkpoint (path or shipped model name) and quantise it on ``calib`` clips."""
    from .train import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    clips = calibration_clips(meta, calib)
    with torch.inference_mode():
        int_model = quantize(model, clips)
    return Golden(meta.get("model", checkpoint), model, int_model, meta, calib)
