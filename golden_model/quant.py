"""Quantizer building blocks: float parameters -> integer layer parameters.

The float model is the reference; every mapping here states its rounding:

* **Weights**: symmetric per output channel, ``w_int = round_half_even(w / s_w)`` with
  ``s_w[o] = max|w[o]| / 127`` (``1`` for an all-zero row), clamped to ``[-127, 127]``.
* **Requant**: a real affine map ``y = acc * r + b`` (``r``, ``b`` per channel or per (t, channel))
  into an output format of scale ``s_out`` becomes ``M / 2**S ~= r / s_out`` with the largest
  ``S`` in ``[1, 47]`` that keeps ``|M| <= 32767``, ``M = round(r / s_out * 2**S)``, and
  ``B = round(b / s_out)``.
* **LIF**: ``L / 2**K`` with ``K = 8`` approximates the charge factor (``1/tau``, or
  ``sigmoid(w)`` of a PLIF) as ``L = clamp(round(a * 256), 1, 256)``; exact ``1/2`` for tau 2
  (``L = 1, K = 1``). ``theta = round(v_th * 2**F)`` in the residual format.
* **Activation formats** come from calibration (:func:`calibrate`): the residual stream's
  fractional bits ``F`` from the largest magnitude seen on it, int8 activation scales from the
  largest magnitude of that activation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from .intlayers import IntConv, IntLIF, IntLinear, Requant
from .intops import MAX_SHIFT, int_range
from .layers import BatchNormPerStep, bn_scale_shift
from .neurons import LIF, PLIF

LIF_SHIFT = 8


class QuantizationError(ValueError):
    """A float parameter cannot be represented in the integer contract."""


def quant_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8 weights: ``(w_int8, s_w)`` with ``w ~= w_int8 * s_w[o]``."""
    w = w.detach().double()
    flat = w.reshape(w.shape[0], -1)
    scale = flat.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scale


def make_requant(r: torch.Tensor, b: torch.Tensor, out_scale: float, out_bits: int, name: str) -> Requant:
    """Requant parameters for ``y_real = acc * r + b`` into a format of scale ``out_scale``.

    ``r``, ``b``: float ``(C,)`` or ``(P, C)`` (broadcast to a common shape).
    """
    r = torch.as_tensor(r, dtype=torch.float64).detach()
    b = torch.as_tensor(b, dtype=torch.float64).detach()
    r, b = torch.broadcast_tensors(r, b)
    if r.dim() == 1:
        r, b = r.unsqueeze(0), b.unsqueeze(0)
    if not (torch.isfinite(r).all() and torch.isfinite(b).all()):
        raise QuantizationError(f"{name}: non-finite requant scale or offset")
    rr = r / out_scale
    mag = rr.abs()
    mmax = int_range(16)[1]
    # largest S with |rr| * 2**S <= mmax
    s = torch.floor(torch.log2(mmax / mag.clamp_min(1e-300))).clamp(1, MAX_SHIFT)
    s = torch.where(mag > 0, s, torch.ones_like(s))
    m = torch.round(rr * torch.exp2(s))
    if (m.abs() > mmax).any():
        worst = float(mag.max())
        raise QuantizationError(f"{name}: requant multiplier {worst:.4g} too large for a 16-bit M with S >= 1")
    bb = torch.round(b / out_scale)
    lo, hi = int_range(32)
    if (bb < lo).any() or (bb > hi).any():
        raise QuantizationError(f"{name}: requant offset exceeds 32 bits")
    return Requant(m.to(torch.int64), s.to(torch.int64), bb.to(torch.int64), out_bits)


def quant_lif(neuron: LIF, name: str, frac_bits: int, bits: int = 16) -> IntLIF:
    """Integer LIF for a float :class:`LIF` / :class:`PLIF` in the ``Q.frac_bits`` format."""
    theta = round(neuron.v_threshold * (1 << frac_bits))
    if isinstance(neuron, PLIF):
        a = float(torch.sigmoid(neuron.w.detach()))
        leak, shift = min(max(round(a * (1 << LIF_SHIFT)), 1), 1 << LIF_SHIFT), LIF_SHIFT
    else:
        a = 1.0 / neuron.tau
        k = round(math.log2(neuron.tau))
        if abs(a * (1 << k) - 1) < 1e-12:
            leak, shift = 1, k
        else:
            leak, shift = round(a * (1 << LIF_SHIFT)), LIF_SHIFT
    return IntLIF(name, leak, shift, theta, bits)


def residual_frac_bits(max_abs: float, bits: int = 16, lo: int = 1, hi: int = 14) -> int:
    """Largest F in ``[lo, hi]`` with ``max_abs * 2**F`` inside the signed ``bits`` range."""
    if max_abs <= 0:
        return hi
    f = math.floor(math.log2(int_range(bits)[1] / max_abs))
    return max(lo, min(hi, f))


def int8_scale(max_abs: float) -> float:
    """Scale of a symmetric int8 activation format covering ``max_abs`` (127 steps).

    A point that never saw a non-zero value in calibration gets the range ``[-1/256, 1/256]``.
    """
    return max(max_abs, 2.0 ** -8) / 127.0


@torch.no_grad()
def calibrate(model: nn.Module, clips: Iterable[torch.Tensor], names: Iterable[str]) -> dict[str, float]:
    """Largest output magnitude of each named submodule over the calibration clips (eval mode)."""
    modules = dict(model.named_modules())
    names = list(names)
    missing = [n for n in names if n not in modules]
    if missing:
        raise KeyError(f"calibration points not in the model: {missing}")
    stats = dict.fromkeys(names, 0.0)
    hooks = []
    for n in names:
        def hook(_m, _i, out, n=n):
            stats[n] = max(stats[n], float(out.detach().abs().max()))
        hooks.append(modules[n].register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for clip in clips:
            model(clip)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return stats


def bn_affine(bn) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(bn, BatchNormPerStep):
        return bn.scale_shift()
    return bn_scale_shift(bn)


class LayerFolder:
    """Folds float layers (weights, bias, BatchNorm, input/output scales) into integer layers
    for one residual format ``Q.F`` of ``bits`` bits."""

    def __init__(self, frac_bits: int, bits: int):
        self.f = frac_bits
        self.bits = bits
        self.res_scale = 2.0 ** -frac_bits

    def lif(self, neuron, name: str) -> IntLIF:
        return quant_lif(neuron, name, self.f, self.bits)

    def requant(self, weight, bias, bn, in_scale, out_scale, out_bits, name):
        """Fold ``bn(conv(x) + bias)`` into int8 weights and a requant."""
        wq, sw = quant_weight(weight)
        bias = torch.zeros(weight.shape[0], dtype=torch.float64) if bias is None else bias.detach().double()
        if bn is None:
            g, h = torch.ones_like(bias), torch.zeros_like(bias)
        else:
            g, h = (t.detach().double() for t in bn_affine(bn))
        rq = make_requant(g * (sw * in_scale), g * bias + h, out_scale, out_bits, name)
        return wq, rq

    def conv(self, conv, bn, name, in_scale=1.0, out_scale=None, out_bits=None, spike_input=True) -> IntConv:
        """An :class:`IntConv` for ``bn(conv(x))``; the output defaults to the residual format."""
        return self.conv_from(conv.weight, conv.bias, bn, name, conv.stride[0], conv.padding[0], conv.groups,
                              in_scale, out_scale, out_bits, spike_input)

    def conv_from(self, weight, bias, bn, name, stride=1, padding=0, groups=1, in_scale=1.0, out_scale=None,
                  out_bits=None, spike_input=True) -> IntConv:
        """:meth:`conv` from a raw 2-D weight (a 1-D conv weight gets a trailing unit axis)."""
        out_scale = self.res_scale if out_scale is None else out_scale
        out_bits = self.bits if out_bits is None else out_bits
        if weight.dim() == 3:
            weight = weight.unsqueeze(-1)
        wq, rq = self.requant(weight, bias, bn, in_scale, out_scale, out_bits, name)
        return IntConv(name, wq, rq, stride, padding, groups, spike_input)

    def linear(self, lin, bn, name, in_scale=1.0, out_scale=None, out_bits=None, spike_input=True,
               layout="tokens") -> IntLinear:
        out_scale = self.res_scale if out_scale is None else out_scale
        out_bits = self.bits if out_bits is None else out_bits
        wq, rq = self.requant(lin.weight, lin.bias, bn, in_scale, out_scale, out_bits, name)
        return IntLinear(name, wq, rq, layout, spike_input)
