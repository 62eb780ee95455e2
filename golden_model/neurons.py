"""Float spiking neurons, multi-step, with surrogate gradients (the ``floating_pt`` models).

Semantics equal SpikingJelly's ``LIFNode`` / ``ParametricLIFNode`` with ``decay_input=True``,
``v_reset=0`` (hard reset), ``detach_reset=True`` and the Heaviside spike ``v >= v_threshold``:

    charge:  v[t] = v[t-1] + (x[t] - v[t-1]) * a      a = 1/tau (LIF) or sigmoid(w) (PLIF)
    fire:    s[t] = (v[t] >= v_threshold)
    reset:   v[t] = v[t] * (1 - s[t])                  (hard reset to 0)

Inputs are ``(T, ...)`` tensors: the first dimension is time. The membrane starts at 0 for
every call (no state carried between clips).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _SpikeFn(torch.autograd.Function):
    """Heaviside forward ``x >= 0``; surrogate derivative backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kind: str, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.kind = kind
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        a = ctx.alpha
        if ctx.kind == "atan":
            # SpikingJelly surrogate.ATan: g(x) = atan(pi/2 * a * x) / pi + 1/2
            sg = (a / 2) / (1 + (math.pi / 2 * a * x) ** 2)
        else:
            # SpikingJelly surrogate.Sigmoid: g(x) = sigmoid(a * x)
            s = torch.sigmoid(a * x)
            sg = a * s * (1 - s)
        return grad * sg, None, None


SURROGATES = {"atan": 2.0, "sigmoid": 4.0}


def spike(x: torch.Tensor, surrogate: str = "atan", alpha: float | None = None) -> torch.Tensor:
    """Heaviside ``x >= 0`` with a surrogate gradient (``atan`` alpha 2, ``sigmoid`` alpha 4)."""
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; expected one of {sorted(SURROGATES)}")
    return _SpikeFn.apply(x, surrogate, SURROGATES[surrogate] if alpha is None else alpha)


class LIF(nn.Module):
    """Multi-step LIF neuron with a fixed time constant (SpikingJelly ``LIFNode``, tau=2 default).

    Args:
        tau: membrane time constant, > 1.
        v_threshold: firing threshold (spike on ``v >= v_threshold``).
        surrogate: ``"sigmoid"`` (SpikingJelly's default for ``LIFNode``) or ``"atan"``.
    """

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, surrogate: str = "sigmoid"):
        super().__init__()
        if tau <= 1.0:
            raise ValueError(f"tau must be > 1, got {tau}")
        self.tau = float(tau)
        self.v_threshold = float(v_threshold)
        self.surrogate = surrogate

    def decay(self) -> torch.Tensor | float:
        """The charge factor ``a`` in ``v += (x - v) * a``."""
        return 1.0 / self.tau

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.decay()
        if not torch.is_grad_enabled() or not (x.requires_grad or isinstance(a, nn.Parameter)
                                               or getattr(a, "requires_grad", False)):
            return self._forward_inference(x, a)
        v = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            v = v + (x[t] - v) * a
            s = spike(v - self.v_threshold, self.surrogate)
            out.append(s)
            v = v * (1.0 - s.detach())
        return torch.stack(out)

    @torch.no_grad()
    def _forward_inference(self, x: torch.Tensor, a: torch.Tensor | float) -> torch.Tensor:
        """Same arithmetic as the training path (``v + (x - v) * a``), in place, no graph."""
        out = torch.empty_like(x, memory_format=torch.contiguous_format)  # contiguous, as the training path
        v = torch.zeros_like(x[0])
        d = torch.empty_like(v)
        for t in range(x.shape[0]):
            torch.sub(x[t], v, out=d)
            d.mul_(a)
            v.add_(d)
            torch.ge(v, self.v_threshold, out=out[t])
            v.addcmul_(v, out[t], value=-1.0)  # v * (1 - s): exactly 0 or v
        return out

    def extra_repr(self) -> str:
        return f"tau={self.tau}, v_threshold={self.v_threshold}, surrogate={self.surrogate}"


class PLIF(LIF):
    """Multi-step parametric LIF (SpikingJelly ``ParametricLIFNode``): ``a = sigmoid(w)``.

    ``w`` is one learned scalar per layer, initialised to ``-log(init_tau - 1)`` (0 for tau 2).
    The parameter is named ``w`` so upstream SVFormer checkpoints load by name.
    """

    def __init__(self, init_tau: float = 2.0, v_threshold: float = 1.0, surrogate: str = "atan"):
        super().__init__(tau=init_tau, v_threshold=v_threshold, surrogate=surrogate)
        self.w = nn.Parameter(torch.tensor(-math.log(init_tau - 1.0)))

    def decay(self) -> torch.Tensor:
        return self.w.sigmoid()

    def extra_repr(self) -> str:
        return f"sigmoid(w)={float(self.w.detach().sigmoid()):.4f}, v_threshold={self.v_threshold}"
