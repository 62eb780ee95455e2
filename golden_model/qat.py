"""Quantisation-aware fine-tuning: train the float model under the integer model's rounding.

Post-training quantisation (:func:`golden_model.pipeline.quantize`) maps a trained float model to
the integer contract (``docs/numerics.md``). Where that costs accuracy, :func:`fine_tune` trains the
float model further with the integer formats imposed in the forward pass, each rounding with a
straight-through gradient (``x + (q(x) - x).detach()``: the forward value is quantised, the gradient
passes unchanged), and then quantises it again. The fake quantisers follow the quantiser's own
formats (:class:`Formats`, calibrated once on the calibration clips before fine-tuning):

* **weights** of every convolution and linear layer: symmetric int8 per output channel,
  ``round(w / s) * s`` with ``s = max|w[o]| / 127`` (recomputed every step, as
  :func:`golden_model.quant.quant_weight` does at quantisation time);
* **the clip**: int8 with the calibrated input scale (``int_model.quantize_clip``);
* **int8 activation points** (the depthwise convolutions' outputs, SVFormer's local attention
  input and output): int8 with their calibrated scales, saturating;
* **the residual stream** (every block's output) and **every neuron's input** (the requant
  outputs that charge the membranes): the ``int16 Q.F`` residual format, saturating.

What it does not model: the requant multipliers' 16-bit rounding (``M / 2**S``, relative error
below ``2**-15``), the membranes' floor in the charge step and the LIF leak's 8-bit quantisation of
a PLIF's ``sigmoid(w)``: all well below one ``Q.F`` step per time step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from .intops import int_range
from .neurons import LIF
from .quant import calibrate, int8_scale, residual_frac_bits
from .spikevideoformer import SpikeVideoFormer
from .svformer import SVFormer

__all__ = ["Formats", "calibrate_formats", "fake_quant", "fine_tune", "frozen_batchnorm"]


@dataclass(frozen=True)
class Formats:
    """The integer formats a model's fake quantisers impose (from :func:`calibrate_formats`)."""

    frac_bits: int                  # F of the residual format int16 Q.F
    res_bits: int                   # 16
    in_scale: float                 # the clip's int8 scale
    int8_scales: dict[str, float]   # module name -> int8 scale of its output


def _points(model: nn.Module) -> tuple[list[str], list[str]]:
    if isinstance(model, SVFormer):
        from .int_svformer import _int8_points, _residual_points
    elif isinstance(model, SpikeVideoFormer):
        from .int_spikevideoformer import _int8_points, _residual_points
    else:
        raise TypeError(f"no quantiser for {type(model).__name__}; expected SVFormer or SpikeVideoFormer")
    return _residual_points(model), _int8_points(model)


@torch.no_grad()
def calibrate_formats(model: nn.Module, calib_clips: list[torch.Tensor], res_bits: int = 16) -> Formats:
    """The formats :func:`golden_model.pipeline.quantize` would choose on ``calib_clips`` (same rules)."""
    if not calib_clips:
        raise ValueError("calibration needs at least one clip")
    residual, int8 = _points(model)
    was_training = model.training
    model.eval()
    try:
        stats = calibrate(model, calib_clips, residual + int8)
    finally:
        model.train(was_training)
    return Formats(frac_bits=residual_frac_bits(max(stats[n] for n in residual), res_bits), res_bits=res_bits,
                   in_scale=int8_scale(max(float(c.abs().max()) for c in calib_clips)),
                   int8_scales={n: int8_scale(stats[n]) for n in int8})


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return x + (q - x).detach()


def _fq_scale(x: torch.Tensor, scale: float, bits: int) -> torch.Tensor:
    lo, hi = int_range(bits)
    return _ste(x, torch.round(x / scale).clamp(lo, hi) * scale)


def _fq_weight(w: torch.Tensor) -> torch.Tensor:
    flat = w.detach().reshape(w.shape[0], -1)
    s = flat.abs().amax(dim=1) / 127.0
    s = torch.where(s > 0, s, torch.ones_like(s)).reshape(-1, *([1] * (w.dim() - 1)))
    return _ste(w, torch.round(w / s).clamp(-127, 127) * s)


class _WeightFakeQuant(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return _fq_weight(w)


def _tensor_output(out, fn):
    return fn(out) if isinstance(out, torch.Tensor) else out


@contextmanager
def fake_quant(model: nn.Module, formats: Formats) -> Iterator[nn.Module]:
    """Impose ``formats`` on ``model``'s forward pass while the context is open (hooks, removed on exit).

    The weights are parametrised (``torch.nn.utils.parametrize``) while it is open: an optimiser
    created inside trains the float weights themselves, which are back in place, trained, on exit.
    """
    modules = dict(model.named_modules())
    missing = [n for n in formats.int8_scales if n not in modules]
    if missing:
        raise KeyError(f"int8 points not in the model: {missing}")
    residual, _ = _points(model)
    step = 2.0 ** -formats.frac_bits
    handles = []
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    orders = [list(m._parameters) for m in weighted]
    try:
        for mod in weighted:
            parametrize.register_parametrization(mod, "weight", _WeightFakeQuant())
        for mod in model.modules():
            if isinstance(mod, LIF):
                handles.append(mod.register_forward_pre_hook(
                    lambda m, args: (_fq_scale(args[0], step, formats.res_bits), *args[1:])))
        handles.append(model.register_forward_pre_hook(
            lambda m, args: (_fq_scale(args[0], formats.in_scale, 8), *args[1:])))
        for name in residual:
            handles.append(modules[name].register_forward_hook(
                lambda m, args, out: _tensor_output(out, lambda t: _fq_scale(t, step, formats.res_bits))))
        for name, scale in formats.int8_scales.items():
            handles.append(modules[name].register_forward_hook(
                lambda m, args, out, s=scale: _tensor_output(out, lambda t: _fq_scale(t, s, 8))))
        yield model
    finally:
        for h in handles:
            h.remove()
        for mod, order in zip(weighted, orders, strict=True):
            if parametrize.is_parametrized(mod, "weight"):
                parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)
                params = mod._parameters
                for name in order:  # the state dict's order, as before
                    params[name] = params.pop(name)


@contextmanager
def frozen_batchnorm(model: nn.Module) -> Iterator[nn.Module]:
    """Every BatchNorm normalises with its running statistics and leaves them unchanged, even in
    training mode, while the context is open (its affine terms still train). Fine-tuning then sees
    the same normalisation as inference, hence as the integer model's folded requant."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def freeze(mod, args) -> None:
        mod.training = False

    handles = [m.register_forward_pre_hook(freeze) for m in bns]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


def fine_tune(model: nn.Module, meta: dict, calib_clips: list[torch.Tensor], *, epochs: int = 3,
              lr: float = 1e-4, batch_size: int | None = None, train_size: int | None = None,
              test_size: int | None = None, seed: int = 1,
              progress: bool = True, log=None) -> tuple[nn.Module, dict]:
    """Quantisation-aware fine-tuning of a trained checkpoint (``model``, ``meta`` from
    :func:`golden_model.train.load_checkpoint`) on its synthetic training set, in place.

    BatchNorm statistics stay frozen (:func:`frozen_batchnorm`). ``epochs`` at learning rate ``lr``
    (AdamW, cosine decay, no warm-up; batch size, training- and
    test-set sizes and the other settings as the checkpoint's training unless given). Returns
    ``(model, meta)`` with ``meta["qat"]`` recording the settings and the formats. The formats are
    calibrated once, before fine-tuning; quantise the result again
    (:func:`golden_model.pipeline.quantize`) for the integer model.
    """
    from .train import train, train_defaults

    name = meta["model"]
    formats = calibrate_formats(model, calib_clips)
    d = meta.get("train", {}) or train_defaults(name)
    ds = meta.get("dataset", {})
    with fake_quant(model, formats), frozen_batchnorm(model):
        model, new_meta = train(name, model=model, epochs=epochs, lr=lr, warmup_epochs=0.0, seed=seed,
                                batch_size=batch_size or d.get("batch_size"),
                                train_size=train_size or ds.get("train_size"),
                                test_size=test_size or ds.get("test_size"),
                                weight_decay=d.get("weight_decay", 0.05),
                                label_smoothing=d.get("label_smoothing", 0.1), grad_clip=d.get("grad_clip", 5.0),
                                data_seed=d.get("data_seed", 0), progress=progress, log=log)
    new_meta["qat"] = {"from": meta.get("path", name), "epochs": epochs, "lr": lr, "seed": seed,
                       "calibration_clips": sum(len(c) for c in calib_clips), "formats": asdict(formats),
                       "base_metrics": meta.get("metrics", {})}
    new_meta["train"] = meta.get("train", {})
    return model, new_meta
