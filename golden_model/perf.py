"""Closed-form cycle models of the RTL engines (``docs/attention_engine.md``, section 5).

The RTL's performance counters must equal these numbers exactly on every simulated run
(``tests/test_rtl_pysim.py``); the models then extrapolate to full-size clips.

Attention engine (``rtl.attention.AttentionEngine``), one window (one head), ``G = ceil(dim / P)``:

    config   = 2                                     (transfer + apply cycle)
    build    = sum over KV token commands n of  max(1, G * popcount(k_n))   (+ 1 per V-pair command)
    readout  = sum over Q token commands m  of  G * max(1, popcount(q_m))   (+ G per constant request)
    busy     = config + build + readout               (status.busy_cycles)
    spikes   = sum_n popcount(k_n) + sum_m popcount(q_m)
    acc_ops  = P * G * spikes                         (P lanes per row-slice step)

A Q token's ``skip`` count (constant tokens elided before it) costs nothing; a V-pair command
(two k-empty KV tokens) costs 1. A dropped or erroneous command and STATUS_CLEAR cost 1 busy cycle
each, an erroneous CONFIG 2 (it is checked in its apply cycle). Busy cycles do not depend on ``v``,
on the mode, on input gaps or on output backpressure (those add starved / blocked cycles, never busy
ones). Latency: the last output beat of a Q token
leaves the output register 2 cycles after the token's last step is issued, so a window run back to
back with an always-ready sink takes ``busy + 2`` cycles from the first command's transfer to the
last beat's transfer, both end cycles counted (``last - first + 1``).

Requant + LIF unit (``rtl.requant_lif.RequantLIF``): one beat per cycle, a fixed pipeline latency,
and a membrane clear sweep of ``neurons * groups`` cycles per ``reset_state`` pulse.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = [
    "attention_cycles", "attention_cycles_from_popcounts", "compact_popcounts", "requant_lif_cycles",
    "REQUANT_LIF_LATENCY",
]

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
    v_pairs: int = 0, const_requests: int = 0,
) -> dict[str, int]:
    """Cycle model of one attention window from the spike counts of its KV and Q token commands.

    ``k_popcounts`` / ``q_popcounts``: one entry per KV / Q *token command* (elided tokens, i.e.
    dropped k-empty dot-mode KV tokens and the ``skip`` counts of Q tokens, have no entry);
    ``v_pairs``: V-pair commands; ``const_requests``: constant-request Q commands. Returns
    ``config``, ``build``, ``readout``, ``busy`` (= their sum, the RTL's ``busy_cycles``),
    ``spikes``, ``acc_ops``, ``out_beats`` (``G`` per Q command), ``groups``. ``config=False``
    leaves the CONFIG's two cycles out (for summing further commands into a window).
    """
    g = _groups(dim, lanes)
    kp = [int(c) for c in k_popcounts]
    qp = [int(c) for c in q_popcounts]
    for c in kp + qp:
        if not 0 <= c <= dim:
            raise ValueError(f"popcount {c} outside [0, dim={dim}]")
    if v_pairs < 0 or const_requests < 0:
        raise ValueError("v_pairs and const_requests must be >= 0")
    build = sum(max(1, g * c) for c in kp) + v_pairs
    readout = sum(g * max(1, c) for c in qp) + g * const_requests
    cfg = 2 if config else 0
    spikes = sum(kp) + sum(qp)
    return {
        "config": cfg,
        "build": build,
        "readout": readout,
        "busy": cfg + build + readout,
        "spikes": spikes,
        "acc_ops": lanes * g * spikes,
        "out_beats": g * (len(qp) + const_requests),
        "groups": g,
    }


def compact_popcounts(kp: list[int], qp: list[int], mode: str) -> dict:
    """The commands a compacting host sends for a window with token popcounts ``kp`` / ``qp``
    (``driver.attention.encode_window(..., compact=True)``, ``docs/attention_engine.md`` s. 1):

    * KV: every token with ``k != 0``; k-empty tokens are dropped in dot mode (they add nothing to
      ``KV = k^T v`` and ``s_V`` is unused) and sent two per V-pair command in Hamming mode (their
      ``v`` enters ``s_V``), an odd one as a plain KV token;
    * Q: every token with ``q != 0`` (the q-empty ones ride on the next token's ``skip`` or are
      implicit at the end of the window), plus one constant request in Hamming mode when some
      q-empty token exists (the dot-mode constant is 0).

    Returns ``{"k": popcounts of KV token commands, "q": of Q token commands, "v_pairs",
    "const_requests", "tokens": the CONFIG's KV token count}``.
    """
    ham = mode == "hamming"
    k_cmds = [c for c in kp if c]
    empty_k = len(kp) - len(k_cmds)
    if ham:
        k_cmds += [0] * (empty_k % 2)
    return {"k": k_cmds, "q": [c for c in qp if c], "v_pairs": empty_k // 2 if ham else 0,
            "const_requests": int(ham and any(c == 0 for c in qp)),
            "tokens": len(kp) if ham else len(k_cmds)}


def attention_cycles(
    k: torch.Tensor, v: torch.Tensor | None, q: torch.Tensor | None, dim: int, lanes: int, mode: str = "dot",
    *, compact: bool = False,
) -> dict[str, int]:
    """Cycle model of one window: ``k``, ``v``: ``(N, dim)`` spikes, ``q``: ``(M, dim)`` spikes.

    ``compact=False``: one command per token (the plain encoding); ``True``: the compacted command
    stream of :func:`compact_popcounts`. ``v`` does not change the cycle count (accepted for a
    uniform signature and checked). See :func:`attention_cycles_from_popcounts` for the keys.
    """
    if mode not in ("dot", "hamming"):
        raise ValueError(f"mode must be 'dot' or 'hamming', got {mode!r}")
    if v is not None and isinstance(k, torch.Tensor) and tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"k and v shapes differ: {tuple(k.shape)} vs {tuple(v.shape)}")
    kp, qp = _popcounts(k), _popcounts(q)
    if not compact:
        return attention_cycles_from_popcounts(kp, qp, dim, lanes)
    c = compact_popcounts(kp, qp, mode)
    return attention_cycles_from_popcounts(c["k"], c["q"], dim, lanes, v_pairs=c["v_pairs"],
                                           const_requests=c["const_requests"])


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


# --------------------------------------------------------------------------------------------
# Spike-accumulate engine (rtl.spike_accum.SpikeAccumulator, docs/spike_accum.md section 5)
# --------------------------------------------------------------------------------------------

__all__ += ["spike_accum_cycles"]


def spike_accum_cycles(x_popcounts: Iterable[int], c_out: int, lanes: int, *, config: bool = True) -> dict[str, int]:
    """Cycle model of one layer run on the spike-accumulate engine, ``G = ceil(c_out / P)``:

        busy     = config + sum over TOKEN commands n of  G * max(1, popcount(x_n))   (status.busy_cycles)
        spikes   = sum_n popcount(x_n)
        acc_ops  = P * G * spikes                 (P lanes per step that adds a weight row)
        out_beats = G per TOKEN command

    ``x_popcounts``: one entry per TOKEN *command* (tokens elided through the ``skip`` count cost
    nothing and have no entry); ``config=False`` leaves the CONFIG cycle out. A dropped or erroneous
    command and STATUS_CLEAR cost 1 busy cycle each; weight loads cost none. Returns ``busy``,
    ``spikes``, ``acc_ops``, ``out_beats``, ``groups``.

    The pipelined engine (front FIFO, issue, index, address, read, weight register, accumulate) keeps this
    throughput; only its latency grew: with back-to-back commands and a ready sink, the first command
    transfer to the last beat transfer takes ``busy + rtl.spike_accum.LATENCY`` cycles (8; 3 before the
    timing work).
    """
    if c_out < 1 or lanes < 1:
        raise ValueError(f"c_out and lanes must be positive, got c_out={c_out}, lanes={lanes}")
    g = -(-c_out // lanes)
    pcs = [int(c) for c in x_popcounts]
    if any(c < 0 for c in pcs):
        raise ValueError("popcounts must be >= 0")
    spikes = sum(pcs)
    return {
        "busy": (1 if config else 0) + sum(g * max(1, c) for c in pcs),
        "spikes": spikes,
        "acc_ops": lanes * g * spikes,
        "out_beats": g * len(pcs),
        "groups": g,
    }
