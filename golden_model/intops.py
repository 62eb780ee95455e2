"""Bit-accurate integer primitives: the single numerical truth for the hardware.

Every function here takes and returns integer tensors only and states its widths, rounding,
saturation and comparisons. The RTL and the driver implement exactly these; their tests call
these functions as the reference. ``docs/numerics.md`` is the prose version of this contract.

Conventions
-----------
* **Spikes** are ``torch.int8`` tensors holding only 0 or 1 (:func:`check_spikes`).
* **Weights** are ``torch.int8`` in ``[-128, 127]``.
* **Accumulators** are ``torch.int32``. A spike accumulate over fan-in ``F`` is bounded by
  ``|acc| <= 128 * F``, an int8 x int8 accumulate by ``128 * 128 * F``; both fit int32 for
  ``F < 2**17`` (checked in :func:`conv2d_int8`).
* **Residual stream / membrane** values are signed ``res_bits``-bit integers (16 by default)
  in a fixed-point format with ``F`` fractional bits chosen by the quantizer.
* Intermediate **activations** on real-valued paths are int8.
* All arithmetic shifts are arithmetic right shifts (floor toward minus infinity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ACC_DTYPE = torch.int32
MAX_FAN_IN = 1 << 17
MAX_SHIFT = 47
MULT_BITS = 16


def int_range(bits: int) -> tuple[int, int]:
    """Signed two's complement range ``[-2**(bits-1), 2**(bits-1) - 1]``."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def sat(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Saturate to the signed ``bits``-bit range (clamp, never wrap)."""
    lo, hi = int_range(bits)
    return x.clamp(lo, hi)


def _require_int(name: str, x: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name} must have dtype {names}, got {str(x.dtype).removeprefix('torch.')}")


def check_spikes(name: str, s: torch.Tensor) -> None:
    """Raise unless ``s`` is an int8 tensor of 0/1 values."""
    _require_int(name, s, (torch.int8,))
    if s.numel():
        lo, hi = (int(v) for v in torch.aminmax(s))
        if lo < 0 or hi > 1:
            raise ValueError(f"{name} must hold spikes (0 or 1), found values in [{lo}, {hi}]")


def check_range(name: str, x: torch.Tensor, bits: int) -> None:
    """Raise unless every element of the integer tensor ``x`` fits signed ``bits`` bits."""
    lo, hi = int_range(bits)
    if x.numel():
        xmin, xmax = (int(v) for v in torch.aminmax(x))
        if xmin < lo or xmax > hi:
            raise ValueError(f"{name} out of the signed {bits}-bit range [{lo}, {hi}]: found [{xmin}, {xmax}]")


# --------------------------------------------------------------------------------------------
# Accumulate
# --------------------------------------------------------------------------------------------

def linear_int8(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``acc[..., o] = sum_i x[..., i] * weight[o, i]`` in int32.

    ``x``: int8 ``(..., C_in)``: spikes (0/1: a *spike accumulate*, the sum of the weights at
    active inputs) or int8 activations. ``weight``: int8 ``(C_out, C_in)``. Exact: the int8 x int8
    products are summed in int32 and ``C_in < 2**17`` keeps the sum in range.
    """
    _require_int("x", x, (torch.int8,))
    _require_int("weight", weight, (torch.int8,))
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x has {x.shape[-1]} input channels, weight expects {weight.shape[1]}")
    if weight.shape[1] >= MAX_FAN_IN:
        raise ValueError(f"fan-in {weight.shape[1]} >= {MAX_FAN_IN} could overflow int32")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if x2.shape[0] == 0:
        return torch.zeros(*lead, weight.shape[0], dtype=ACC_DTYPE)
    if weight.shape[1] == 1:  # torch._int_mm returns garbage for an inner dimension of 1 (CPU, torch 2.13)
        return (x2.to(ACC_DTYPE) * weight.t().to(ACC_DTYPE)).reshape(*lead, weight.shape[0])
    return torch._int_mm(x2.contiguous(), weight.t()).reshape(*lead, weight.shape[0])


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d_int8(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
) -> torch.Tensor:
    """Integer 2-D convolution (cross-correlation, zero padding) in int32.

    ``x``: int8 ``(B, C_in, H, W)`` (spikes or int8 activations); ``weight``: int8
    ``(C_out, C_in / groups, kh, kw)``. Returns int32 ``(B, C_out, H_out, W_out)`` with
    ``H_out = (H + 2 p - kh) // s + 1``. Fan-in ``C_in / groups * kh * kw`` must be below
    ``2**17`` so the int32 sum cannot overflow. Padded positions contribute 0 (a silent input).
    Depthwise (``groups == C_in == C_out``) runs as kh*kw shifted multiply-adds.
    """
    _require_int("x", x, (torch.int8,))
    _require_int("weight", weight, (torch.int8,))
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"expected 4-D x and weight, got {tuple(x.shape)} and {tuple(weight.shape)}")
    b, cin, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    if cin % groups or cout % groups or cin_g != cin // groups:
        raise ValueError(f"x has {cin} channels; weight {tuple(weight.shape)} does not fit groups={groups}")
    fan_in = cin_g * kh * kw
    if fan_in >= MAX_FAN_IN:
        raise ValueError(f"fan-in {fan_in} >= {MAX_FAN_IN} could overflow int32")
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (w + 2 * pw - kw) // sw + 1
    if ho <= 0 or wo <= 0:
        raise ValueError(f"input {h}x{w} too small for kernel {kh}x{kw} with padding {ph},{pw}")
    if groups == cin and cin_g == 1 and cout == cin:
        acc = torch.zeros(b, cout, ho, wo, dtype=ACC_DTYPE)
        wt = weight.to(ACC_DTYPE)
        xi = xp.to(ACC_DTYPE)
        for dy in range(kh):
            for dx in range(kw):
                win = xi[:, :, dy: dy + sh * (ho - 1) + 1: sh, dx: dx + sw * (wo - 1) + 1: sw]
                acc.addcmul_(win, wt[:, 0, dy, dx].view(1, cout, 1, 1))
        return acc
    # im2col in channels-last order: rows (B*Ho*Wo) of (kh, kw, C_g), so the gather copies runs of
    # C_g contiguous bytes; the weight is reordered to match. One group at a time.
    xl = xp.permute(0, 2, 3, 1)                                   # (B, Hp, Wp, C) view
    outs = []
    cout_g = cout // groups
    for g in range(groups):
        xg = xl[..., g * cin_g:(g + 1) * cin_g].contiguous()
        cols = xg.unfold(1, kh, sh).unfold(2, kw, sw)              # (B, Ho, Wo, C_g, kh, kw) view
        cg = cols.permute(0, 1, 2, 4, 5, 3).reshape(b * ho * wo, fan_in)
        wg = weight[g * cout_g:(g + 1) * cout_g].permute(0, 2, 3, 1).reshape(cout_g, fan_in)
        outs.append(torch._int_mm(cg, wg.t()))
    acc = torch.cat(outs, dim=1) if groups > 1 else outs[0]
    return acc.reshape(b, ho, wo, cout).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------
# Requant, shortcut, LIF
# --------------------------------------------------------------------------------------------

def check_requant_params(m: torch.Tensor, s: torch.Tensor, b: torch.Tensor, out_bits: int) -> None:
    """Raise unless M is int16-ranged, ``1 <= S <= 47`` and B fits int32."""
    for name, t in (("M", m), ("S", s), ("B", b)):
        _require_int(name, t, (torch.int32, torch.int64))
    check_range("M", m, MULT_BITS)
    if s.numel() and (int(s.min()) < 1 or int(s.max()) > MAX_SHIFT):
        raise ValueError(f"S must be in [1, {MAX_SHIFT}], found [{int(s.min())}, {int(s.max())}]")
    check_range("B", b, 32)
    if out_bits not in (8, 16, 32):
        raise ValueError(f"out_bits must be 8, 16 or 32, got {out_bits}")


def requant(acc: torch.Tensor, m: torch.Tensor, s: torch.Tensor, b: torch.Tensor, out_bits: int) -> torch.Tensor:
    """Requantise an accumulator to a fixed-point output format.

        y = sat_out( ((acc * M + (1 << (S - 1))) >> S) + B )

    * ``acc``: int32 (any shape); ``M``: signed 16-bit multiplier; ``S``: shift in ``[1, 47]``;
      ``B``: signed 32-bit offset already in the output format (bias, BN shift). ``M``, ``S``,
      ``B`` broadcast against ``acc`` (per channel, or per (t, channel) where BN is per step).
    * ``acc * M`` is at most 47 bits plus sign (``|acc| < 2**31``, ``|M| <= 2**15``); with the
      rounding constant it fits a signed 48-bit product register. The shift is arithmetic, so the
      result is ``round-half-up(acc * M / 2**S)``. The sum with ``B`` is formed exactly (49 bits)
      and then saturated to ``out_bits`` (8, 16 or 32).

    Returns int32 (values within ``out_bits``).
    """
    _require_int("acc", acc, (torch.int32, torch.int64))
    check_requant_params(m, s, b, out_bits)
    s64 = s.to(torch.int64)
    shape = torch.broadcast_shapes(acc.shape, m.shape, s.shape, b.shape)
    y = acc.to(torch.int64).expand(shape).clone() if shape != acc.shape else acc.to(torch.int64)
    y.mul_(m.to(torch.int64)).add_(1 << (s64 - 1)).bitwise_right_shift_(s64).add_(b.to(torch.int64))
    return sat(y, out_bits).to(torch.int32)


def shortcut(x: torch.Tensor, y: torch.Tensor, bits: int = 16) -> torch.Tensor:
    """Membrane shortcut ``sat_bits(x + y)`` (both in the same fixed-point format)."""
    _require_int("x", x, (torch.int32,))
    _require_int("y", y, (torch.int32,))
    return sat(x.to(torch.int64) + y.to(torch.int64), bits).to(torch.int32)


def check_lif_params(leak: int, shift: int, theta: int, bits: int) -> None:
    """Raise unless ``0 < leak <= 2**shift``, ``1 <= shift <= 15`` and ``0 < theta < 2**(bits-1)``."""
    if not 1 <= shift <= 15:
        raise ValueError(f"LIF shift K must be in [1, 15], got {shift}")
    if not 0 < leak <= (1 << shift):
        raise ValueError(f"LIF leak L must be in [1, 2**K = {1 << shift}], got {leak}")
    if not 0 < theta <= int_range(bits)[1]:
        raise ValueError(f"LIF threshold must be in [1, {int_range(bits)[1]}], got {theta}")


def lif_step(v: torch.Tensor, x: torch.Tensor, leak: int, shift: int, theta: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One integer LIF time step.

        v' = v + (((x - v) * L) >> K)      charge (L / 2**K = 1/tau or quantised sigmoid(w))
        s  = v' >= theta                   fire (greater-or-equal, as SpikingJelly)
        v'' = 0 where s else v'            hard reset to 0

    ``v`` and ``x`` are int32 holding ``bits``-bit values. ``x - v`` needs ``bits + 1`` bits, the
    product ``bits + 1 + K + 1`` bits (< 34 for 16-bit values and K <= 15; formed in int64 here).
    Because ``0 < L / 2**K <= 1`` and the shift floors, the new ``v`` lies in
    ``[min(v, x), max(v, x)]``: for ``d = x - v < 0``, ``floor(d L / 2**K) >= d`` as ``d`` is an
    integer not above ``d L / 2**K``. So ``v`` never leaves the ``bits``-bit format and needs no
    saturation. Returns ``(spikes int8, v int32)``.
    """
    d = (x.to(torch.int64) - v.to(torch.int64)) * leak
    v = (v.to(torch.int64) + (d >> shift)).to(torch.int32)
    s = v >= theta
    return s.to(torch.int8), torch.where(s, torch.zeros_like(v), v)


def lif(x: torch.Tensor, leak: int, shift: int, theta: int, bits: int = 16) -> torch.Tensor:
    """Integer multi-step LIF over ``x: (T, ...)`` int32 in the ``bits``-bit format; ``v`` starts at 0.

    Inputs must lie in the signed ``bits``-bit range; the membrane then stays in it (see
    :func:`lif_step`). Returns int8 spikes ``(T, ...)``.
    """
    _require_int("x", x, (torch.int32,))
    check_lif_params(leak, shift, theta, bits)
    check_range("LIF input", x, bits)
    if bits + shift + 3 > 32:  # (x - v) * L would not fit int32: take the int64 reference step
        v = torch.zeros_like(x[0])
        out = torch.empty(x.shape, dtype=torch.int8)
        for t in range(x.shape[0]):
            out[t], v = lif_step(v, x[t], leak, shift, theta)
        return out
    # Same arithmetic as lif_step, in place in int32: |(x - v) * L| < 2**(bits + shift + 1).
    fired = torch.empty(x.shape, dtype=torch.bool)
    v = torch.zeros_like(x[0])
    d = torch.empty_like(v)
    for t in range(x.shape[0]):
        torch.sub(x[t], v, out=d)
        d.mul_(leak).bitwise_right_shift_(shift)
        v.add_(d)
        torch.ge(v, theta, out=fired[t])
        v.masked_fill_(fired[t], 0)
    return fired.to(torch.int8)


# --------------------------------------------------------------------------------------------
# Spike-driven attention counts
# --------------------------------------------------------------------------------------------

ATTENTION_MODES = ("dot", "hamming")


def attention_kv(k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KV count matrix and V spike counts over a window of N tokens.

    ``k``, ``v``: int8 spikes ``(..., N, D)``. Returns ``KV[..., i, j] = sum_n k[n, i] & v[n, j]``
    (int32, ``0 <= KV <= N``) and ``s_V[..., j] = sum_n v[n, j]`` (int32, ``0 <= s_V <= N``).
    Counters need ``ceil(log2(N + 1))`` bits.
    """
    check_spikes("k", k)
    check_spikes("v", v)
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    kv = torch.matmul(k.transpose(-2, -1).to(torch.int32), v.to(torch.int32))
    return kv, v.to(torch.int32).sum(dim=-2, dtype=torch.int32)


def attention_readout(q: torch.Tensor, kv: torch.Tensor, s_v: torch.Tensor, mode: str) -> torch.Tensor:
    """Read-out per query token from the counts of :func:`attention_kv`.

    * ``dot``:     ``o[n, j] = sum_i q[n, i] * KV[i, j]``; ``0 <= o <= D * N``.
    * ``hamming``: ``A = 2 KV - 1 s_V^T`` (``A[i, j] = 2 KV[i, j] - s_V[j]``, ``|A| <= N``) and
      ``o[n, j] = 2 sum_i q[n, i] A[i, j] - sum_i A[i, j]``, which equals
      ``((2q - 1) (2K - 1)^T V)[n, j]``; ``|o| <= D * N``.

    ``q``: int8 spikes ``(..., M, D)``; ``kv``: int32 ``(..., D, D)``; ``s_v``: int32 ``(..., D)``.
    Returns int32 ``(..., M, D)``; the sums need ``ceil(log2(D * N + 1)) + 1`` bits.
    """
    check_spikes("q", q)
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention mode must be one of {ATTENTION_MODES}, got {mode!r}")
    qi = q.to(torch.int32)
    if mode == "dot":
        return torch.matmul(qi, kv)
    a = 2 * kv - s_v.unsqueeze(-2)
    return 2 * torch.matmul(qi, a) - a.sum(dim=-2, keepdim=True, dtype=torch.int32)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mode: str) -> torch.Tensor:
    """Spike-driven attention over one window: ``attention_readout(q, *attention_kv(k, v), mode)``.

    ``q``, ``k``, ``v``: int8 spikes ``(..., N, D)``; the window is the token axis ``N`` (one
    frame for SVFormer, all ``T*H*W`` tokens for SpikeVideoFormer). Returns int32 ``(..., N, D)``.
    """
    kv, s_v = attention_kv(k, v)
    return attention_readout(q, kv, s_v, mode)
