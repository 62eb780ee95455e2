"""Integer layers (``bit_accurate``): the primitives of :mod:`golden_model.intops` bound to parameters.

Each layer holds integer tensors only, carries the name of the float module it replaces (so a
trace points at the same place in both models) and records what it computes into a
:class:`Tracer`. Tensor layouts are multi-step, like the float models:

* ``"chw"``: ``(T, B, C, H, W)``   convolutional stages
* ``"tokens"``: ``(T, B, N, C)``  attention stages (``N = H*W`` tokens of a frame)
* ``"flat"``: ``(B, C)``          the classifier head

Requant parameters are stored as ``(P, C)`` tensors with ``P = T`` (BatchNorm per time step) or
``P = 1`` (per channel only) and broadcast to the layout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from . import intops
from .layers import check_clip

LAYOUTS = ("chw", "tokens", "flat")


class Tracer:
    """Collects named tensors during an integer forward pass (the per-layer trace hook).

    ``Tracer(select)`` records the entries whose layer name satisfies ``select`` (a set of names,
    a predicate, or ``None`` for every layer). Entries are keyed ``"<layer>:<kind>"`` with kinds
    ``spikes`` (int8 LIF outputs), ``acc`` (int32 accumulators before requant), ``out`` (requant
    outputs), ``counts`` (attention read-out sums) and ``input`` (the quantised clip).
    """

    def __init__(self, select: Iterable[str] | Callable[[str], bool] | None = None):
        if select is None or callable(select):
            self._want = select
        else:
            names = set(select)
            self._want = names.__contains__
        self.records: dict[str, torch.Tensor] = {}

    def record(self, name: str, kind: str, value: torch.Tensor) -> None:
        if self._want is None or self._want(name):
            self.records[f"{name}:{kind}"] = value.clone()

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.records[key]

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def keys(self) -> list[str]:
        return list(self.records)


class _NullTracer(Tracer):
    def record(self, name: str, kind: str, value: torch.Tensor) -> None:
        pass


NULL_TRACER = _NullTracer()


@dataclass
class Requant:
    """Requant parameters ``y = sat_out(((acc * M + (1 << (S-1))) >> S) + B)`` (see intops.requant).

    ``m``, ``s``, ``b``: int64 ``(P, C)``; ``out_bits``: 8, 16 or 32. An 8-bit output is returned as
    int8 (an activation for the next int8 layer), wider outputs as int32.
    """

    m: torch.Tensor
    s: torch.Tensor
    b: torch.Tensor
    out_bits: int

    def __post_init__(self) -> None:
        for t in (self.m, self.s, self.b):
            if t.dim() != 2 or t.shape != self.m.shape:
                raise ValueError(f"requant params must share one (P, C) shape, got {tuple(t.shape)}")
        intops.check_requant_params(self.m, self.s, self.b, self.out_bits)

    @property
    def channels(self) -> int:
        return self.m.shape[1]

    def _view(self, p: torch.Tensor, layout: str, acc: torch.Tensor) -> torch.Tensor:
        rows, c = p.shape
        if layout == "chw":
            if rows not in (1, acc.shape[0]):
                raise ValueError(f"requant has {rows} time rows, input has T={acc.shape[0]}")
            return p.view(rows, 1, c, 1, 1)
        if layout == "tokens":
            if rows not in (1, acc.shape[0]):
                raise ValueError(f"requant has {rows} time rows, input has T={acc.shape[0]}")
            return p.view(rows, 1, 1, c)
        if layout == "flat":
            if rows != 1:
                raise ValueError("flat layout takes per-channel requant params only")
            return p.view(1, c)
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")

    def traced(self, name: str, acc: torch.Tensor, layout: str, tracer: Tracer, kind: str = "acc") -> torch.Tensor:
        """Requant ``acc`` and record ``<name>:<kind>`` (the accumulator) and ``<name>:out``."""
        tracer.record(name, kind, acc)
        y = self(acc, layout)
        tracer.record(name, "out", y)
        return y

    def __call__(self, acc: torch.Tensor, layout: str) -> torch.Tensor:
        y = intops.requant(acc, self._view(self.m, layout, acc), self._view(self.s, layout, acc),
                           self._view(self.b, layout, acc), self.out_bits)
        return y.to(torch.int8) if self.out_bits == 8 else y


@dataclass
class IntLIF:
    """Integer LIF: ``v += ((x - v) * leak) >> shift``; spike and hard reset on ``v >= theta``."""

    name: str
    leak: int
    shift: int
    theta: int
    bits: int = 16

    def __post_init__(self) -> None:
        intops.check_lif_params(self.leak, self.shift, self.theta, self.bits)

    def __call__(self, x: torch.Tensor, tracer: Tracer = NULL_TRACER) -> torch.Tensor:
        s = intops.lif(x, self.leak, self.shift, self.theta, self.bits)
        tracer.record(self.name, "spikes", s)
        return s


@dataclass
class IntConv:
    """2-D convolution on spikes or int8 activations over ``(T, B, C, H, W)``, then requant."""

    name: str
    weight: torch.Tensor  # int8 (C_out, C_in/groups, kh, kw)
    rq: Requant
    stride: int = 1
    padding: int = 0
    groups: int = 1
    spike_input: bool = True

    def __call__(self, x: torch.Tensor, tracer: Tracer = NULL_TRACER) -> torch.Tensor:
        if self.spike_input:
            intops.check_spikes(f"{self.name} input", x)
        t, b = x.shape[:2]
        acc = intops.conv2d_int8(x.flatten(0, 1), self.weight, self.stride, self.padding, self.groups)
        return self.rq.traced(self.name, acc.reshape(t, b, *acc.shape[1:]), "chw", tracer)


@dataclass
class IntEmbed:
    """Downsampling / patch embedding ``[LIF ->] conv -> requant -> Q.F`` (no LIF on the pixel stem)."""

    proj: IntConv
    in_lif: IntLIF | None = None

    def __call__(self, x: torch.Tensor, tr: Tracer) -> torch.Tensor:
        if self.in_lif is not None:
            x = self.in_lif(x, tr)
        return self.proj(x, tr)


@dataclass
class IntLinear:
    """Linear layer on spikes or int8 activations (``"tokens"`` or ``"flat"`` layout), then requant."""

    name: str
    weight: torch.Tensor  # int8 (C_out, C_in)
    rq: Requant
    layout: str = "tokens"
    spike_input: bool = True

    def __call__(self, x: torch.Tensor, tracer: Tracer = NULL_TRACER) -> torch.Tensor:
        if self.spike_input:
            intops.check_spikes(f"{self.name} input", x)
        return self.rq.traced(self.name, intops.linear_int8(x, self.weight), self.layout, tracer)


@dataclass
class IntAttention:
    """Spike-driven attention counts per head over a window, then requant to the residual format.

    ``window="frame"``: tokens of one frame (SVFormer); ``"clip"``: all ``T*N`` tokens of the clip
    jointly (SpikeVideoFormer). q, k, v: int8 spikes ``(T, B, N, C)`` with ``C = heads*head_dim``,
    channels ordered ``(head, d)``. Returns the requanted output ``(T, B, N, C)``.
    """

    name: str
    heads: int
    mode: str
    window: str
    rq: Requant

    def __post_init__(self) -> None:
        if self.mode not in intops.ATTENTION_MODES:
            raise ValueError(f"attention mode must be one of {intops.ATTENTION_MODES}, got {self.mode!r}")
        if self.window not in ("frame", "clip"):
            raise ValueError(f"attention window must be 'frame' or 'clip', got {self.window!r}")

    def counts(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        t, b, n, c = q.shape
        if c % self.heads:
            raise ValueError(f"{c} channels do not split into {self.heads} heads")
        d = c // self.heads

        def heads(x: torch.Tensor) -> torch.Tensor:
            x = x.reshape(t, b, n, self.heads, d).permute(1, 3, 0, 2, 4)  # (B, heads, T, N, D)
            return x.reshape(b, self.heads, t * n, d) if self.window == "clip" else x

        o = intops.attention(heads(q), heads(k), heads(v), self.mode)
        o = o.reshape(b, self.heads, t, n, d).permute(2, 0, 3, 1, 4)
        return o.reshape(t, b, n, c)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 tracer: Tracer = NULL_TRACER) -> torch.Tensor:
        return self.rq.traced(self.name, self.counts(q, k, v), "tokens", tracer, kind="counts")


@dataclass
class IntModelBase:
    """Common frame of the integer models: input quantisation and the residual format."""

    name: str
    frames: int
    img_size: int
    in_chans: int
    in_scale: float            # float clip value = in_scale * int8 input (host-side only)
    frac_bits: int             # F: residual stream format Q(res_bits - 1 - F).F
    res_bits: int = 16
    logit_frac_bits: int = 16  # logits are int32 with this many fractional bits
    meta: dict = field(default_factory=dict)

    def quantize_clip(self, clip: torch.Tensor) -> torch.Tensor:
        """Host-side input quantisation: ``clamp(floor(x / in_scale + 1/2), -128, 127)`` as int8.

        ``clip``: float ``(B, C, T, H, W)``, normalised. This is the only float step; the
        integer model proper starts from its int8 result.
        """
        check_clip(clip, self.in_chans, self.frames, self.img_size)
        q = torch.floor(clip.double() / self.in_scale + 0.5).clamp(-128, 127)
        return q.to(torch.int8)

    def check_int_clip(self, clip: torch.Tensor) -> None:
        check_clip(clip, self.in_chans, self.frames, self.img_size, integer=True)

    def logits_float(self, logits: torch.Tensor) -> torch.Tensor:
        """The real value of int32 logits (for reports only)."""
        return logits.double() / (1 << self.logit_frac_bits)
