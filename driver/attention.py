"""Host side of the attention engine's command stream: encode a window, decode its read-out beats.

``docs/attention_engine.md`` (section 1) is the protocol; ``rtl.attention.cmd_layout`` /
``out_layout`` give the field widths. Commands and beats are plain dicts keyed by the layout's
field names (``sim.streams.pack`` turns them into payload integers).

* :func:`encode_window` turns one window's spikes ``k, v: (N, dim)``, ``q: (M, dim)`` into commands:
  plain (one command per token) or compacted (``compact=True``, the default): k-empty KV tokens
  dropped in dot mode and paired in Hamming mode, q-empty tokens elided into the next Q token's
  ``skip`` count or left implicit at the end, one constant request in Hamming mode.
* :func:`decode_readout` turns the window's output beats back into the dense read-out ``(M, dim)``,
  which equals ``intops.attention_readout(q, *intops.attention_kv(k, v), mode)`` exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from golden_model import intops
from rtl.attention import MODE_DOT, MODE_HAMMING, OP_CONFIG, OP_KV, OP_Q

__all__ = ["SKIP_MAX", "AttentionProtocolError", "bits", "encode_window", "decode_readout"]

SKIP_MAX = 0xFFFF  # the 16-bit ``skip`` field
MODES = {"dot": MODE_DOT, "hamming": MODE_HAMMING}


class AttentionProtocolError(ValueError):
    """A window that cannot be encoded, or beats that do not decode to a whole window."""


def bits(row: torch.Tensor | Iterable[int]) -> int:
    """A spike vector (0/1) -> integer, bit i = element i."""
    vals = row.tolist() if isinstance(row, torch.Tensor) else list(row)
    return sum(1 << i for i, b in enumerate(vals) if b)


def _check(name: str, x: torch.Tensor, dim: int | None) -> None:
    intops.check_spikes(name, x)
    if x.dim() != 2:
        raise AttentionProtocolError(f"{name} must be (tokens, dim), got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise AttentionProtocolError(f"{name} has dim {x.shape[1]}, k has {dim}")


def encode_window(k: torch.Tensor, v: torch.Tensor, q: torch.Tensor, mode: str, *, head: int = 0,
                  compact: bool = True) -> list[dict]:
    """Commands for one window: CONFIG, its KV tokens, its Q tokens (see the module docs).

    ``k``, ``v``: int8 spikes ``(N, dim)``; ``q``: ``(M, dim)``. The decoded read-out of the
    engine's beats for these commands is the same for both encodings; the compacted one costs
    ``golden_model.perf.attention_cycles(..., compact=True)`` busy cycles.
    """
    if mode not in MODES:
        raise AttentionProtocolError(f"mode must be 'dot' or 'hamming', got {mode!r}")
    _check("k", k, None)
    dim = k.shape[1]
    _check("v", v, dim)
    _check("q", q, dim)
    if v.shape[0] != k.shape[0]:
        raise AttentionProtocolError(f"k has {k.shape[0]} tokens, v has {v.shape[0]}")
    ks = [bits(r) for r in k]
    vs = [bits(r) for r in v]
    qs = [bits(r) for r in q]
    kv_cmds = []
    if not compact:
        kv_cmds = [{"op": OP_KV, "a": a, "b": b} for a, b in zip(ks, vs, strict=True)]
        q_cmds = [{"op": OP_Q, "a": x} for x in qs]
    else:
        empty_v = []
        for a, b in zip(ks, vs, strict=True):
            if a:
                kv_cmds.append({"op": OP_KV, "a": a, "b": b})
            elif mode == "hamming":
                empty_v.append(b)
        for i in range(0, len(empty_v) - 1, 2):
            kv_cmds.append({"op": OP_KV, "mode": 1, "a": empty_v[i], "b": empty_v[i + 1]})
        if len(empty_v) % 2:
            kv_cmds.append({"op": OP_KV, "a": 0, "b": empty_v[-1]})
        q_cmds = []
        if mode == "hamming" and any(x == 0 for x in qs):
            q_cmds.append({"op": OP_Q, "mode": 1})
        skip = 0
        for x in qs:
            if x == 0:
                skip += 1
                if skip > SKIP_MAX:  # an explicit empty token carries the longest run
                    q_cmds.append({"op": OP_Q, "a": 0, "skip": SKIP_MAX})
                    skip = 0
                continue
            q_cmds.append({"op": OP_Q, "a": x, "skip": skip})
            skip = 0
    tokens = sum(2 if c.get("mode") else 1 for c in kv_cmds)
    config = {"op": OP_CONFIG, "mode": MODES[mode], "head": head, "dim": dim, "tokens": tokens}
    return [config, *kv_cmds, *q_cmds]


def decode_readout(beats: Iterable[dict], n_q: int, dim: int, lanes: int, mode: str) -> torch.Tensor:
    """The dense read-out ``(n_q, dim)`` int32 of one window from its output beats, in order.

    Constant tokens (``skip`` runs, and the tokens after the last beat) take the window constant:
    0 in dot mode, the constant-request beats in Hamming mode. Raises
    :class:`AttentionProtocolError` on beats out of order or more tokens than ``n_q``.
    """
    groups = -(-dim // lanes)
    const: list[int] | None = [0] * dim if mode == "dot" else None
    rows: list[list[int]] = []
    cur: list[int] = []
    cur_const = False
    for n, beat in enumerate(beats):
        g = int(beat["group"])
        want = len(cur) // lanes
        if g != want:
            raise AttentionProtocolError(f"beat {n}: group {g}, expected {want}")
        if g == 0:
            cur_const = bool(beat.get("const", 0))
            if not cur_const:
                skip = int(beat.get("skip", 0))
                if skip:
                    if const is None:
                        raise AttentionProtocolError(f"beat {n}: skip {skip} before the window constant")
                    rows.extend([list(const)] * skip)
        cur.extend(int(x) for x in beat["data"])
        if int(beat["last"]) != int(g == groups - 1):
            raise AttentionProtocolError(f"beat {n}: last = {beat['last']} on group {g} of {groups}")
        if g == groups - 1:
            if cur_const:
                const = cur[:dim]
            else:
                rows.append(cur[:dim])
            cur = []
    if cur:
        raise AttentionProtocolError(f"the beats end inside a token ({len(cur) // lanes} of {groups} groups)")
    if len(rows) > n_q:
        raise AttentionProtocolError(f"{len(rows)} tokens decoded, the window has {n_q}")
    if len(rows) < n_q:
        if const is None:
            raise AttentionProtocolError(f"{n_q - len(rows)} implicit tokens and no window constant")
        rows.extend([list(const)] * (n_q - len(rows)))
    return torch.tensor(rows, dtype=torch.int32).reshape(n_q, dim)
