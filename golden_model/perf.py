"""Closed-form cycle models of the RTL engines (``docs/attention_engine.md``, section 5).

The RTL's performance counters must equal these numbers exactly on every simulated run
(``tests/test_rtl_pysim.py``); the models then extrapolate to full-size clips.

Attention engine (``rtl.attention.AttentionEngine``), one window (one head), ``G = ceil(dim / P)``:

    config   = 1
    build    = sum over KV tokens n of  max(1, G * popcount(k_n))
    readout  = sum over Q tokens m  of  G * max(1, popcount(q_m))
    busy     = config + build + readout               (status.busy_cycles)
    spikes   = sum_n popcount(k_n) + sum_m popcount(q_m)
    acc_ops  = P * G * spikes                         (P lanes per row-slice step)

A dropped or erroneous command and STATUS_CLEAR cost 1 busy cycle each. Busy cycles do not depend
on ``v``, on the mode, on input gaps or on output backpressure (those add starved / blocked cycles,
never busy ones). Latency: the last output beat of a Q token leaves the output register 2 cycles
after the token's last step is issued, so a window run back to back with an always-ready sink
takes ``busy + 2`` cycles from the first command's transfer to the last beat's transfer, both
end cycles counted (``last - first + 1``).

Requant + LIF unit (``rtl.requant_lif.RequantLIF``): one beat per cycle, a fixed pipeline latency,
and a membrane clear sweep of ``neurons * groups`` cycles per ``reset_state`` pulse.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["attention_cycles", "attention_cycles_from_popcounts", "requant_lif_cycles", "REQUANT_LIF_LATENCY"]

# clock edges from a beat's transfer on ``inp`` to its spike beat's transfer on ``out`` (ready sink)
REQUANT_LIF_LATENCY = 4


def _groups(dim: int, lanes: int) -> int:
    if dim < 1 or lanes < 1:
        raise ValueError(f"dim and lanes must be positive, got dim={dim}, lanes={lanes}")
    return -(-dim // lanes)


def _popcounts(x: torch.Tensor | Iterable[Iterable[int]] | None) -> list[int]:
    if x is None:
        return []
    if isinstance(x, torch.Tensor):
        if x.numel() == 0:
            return []
        return [int(c) for c in (x.reshape(-1, x.shape[-1]) != 0).sum(dim=-1)]
    return [sum(1 for b in row if b) for row in x]


def attention_cycles_from_popcounts(
    k_popcounts: Iterable[int], q_popcounts: Iterable[int], dim: int, lanes: int, *, config: bool = True,
) -> dict[str, int]:
    """Cycle model of one attention window from the spike counts of its k and q tokens.

    Returns ``config``, ``build``, ``readout``, ``busy`` (= their sum, the RTL's
    ``busy_cycles``), ``spikes``, ``acc_ops``, ``out_beats`` (``G`` per Q token), ``groups``.
    ``config=False`` leaves the CONFIG cycle out (for summing further tokens into a window).
    """
    g = _groups(dim, lanes)
    kp = [int(c) for c in k_popcounts]
    qp = [int(c) for c in q_popcounts]
    for c in kp + qp:
        if not 0 <= c <= dim:
            raise ValueError(f"popcount {c} outside [0, dim={dim}]")
    build = sum(max(1, g * c) for c in kp)
    readout = sum(g * max(1, c) for c in qp)
    cfg = 1 if config else 0
    spikes = sum(kp) + sum(qp)
    return {
        "config": cfg,
        "build": build,
        "readout": readout,
        "busy": cfg + build + readout,
        "spikes": spikes,
        "acc_ops": lanes * g * spikes,
        "out_beats": g * len(qp),
        "groups": g,
    }


def attention_cycles(
    k: torch.Tensor, v: torch.Tensor | None, q: torch.Tensor | None, dim: int, lanes: int, mode: str = "dot",
) -> dict[str, int]:
    """Cycle model of one window: ``k``, ``v``: ``(N, dim)`` spikes, ``q``: ``(M, dim)`` spikes.

    ``v`` and ``mode`` do not change the cycle count (accepted for a uniform signature and
    checked). See :func:`attention_cycles_from_popcounts` for the returned keys.
    """
    if mode not in ("dot", "hamming"):
        raise ValueError(f"mode must be 'dot' or 'hamming', got {mode!r}")
    if v is not None and isinstance(k, torch.Tensor) and tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"k and v shapes differ: {tuple(k.shape)} vs {tuple(v.shape)}")
    return attention_cycles_from_popcounts(_popcounts(k), _popcounts(q), dim, lanes)


def requant_lif_cycles(beats: int, *, neurons: int = 0, groups: int = 1, resets: int = 0) -> dict[str, int]:
    """Cycle model of the requant + LIF unit: one beat per busy cycle plus clear sweeps.

    ``busy = beats + resets * neurons * groups`` (one accepted beat per cycle; each ``reset_state``
    pulse given while idle sweeps ``neurons * groups`` membrane rows). ``total = busy + latency``
    for beats only: the cycles from the first beat's input transfer to the last spike beat's output
    transfer, both included, with no input gaps and an always-ready sink.
    """
    if beats < 0 or resets < 0:
        raise ValueError("beats and resets must be >= 0")
    clear = resets * neurons * groups
    busy = beats + clear
    return {"beats": beats, "clear": clear, "busy": busy, "latency": REQUANT_LIF_LATENCY,
            "total": busy + (REQUANT_LIF_LATENCY if beats else 0)}
