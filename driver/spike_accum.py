"""Host side of the spike-accumulate engine: weight rows, commands, and the decoding of its beats.

``docs/spike_accum.md`` is the protocol; ``rtl.spike_accum.cmd_layout`` / ``wload_layout`` /
``out_layout`` give the field widths. Commands, weight rows and beats are plain dicts keyed by the
layout's field names (``sim.streams.pack`` turns them into payload integers).

* :func:`weight_rows` lays a layer's int8 weight ``(c_out, c_in)`` out in memory rows from ``base``
  on: row ``base + i * G + g`` holds ``W[g*P + l][i]`` in lane ``l``, zero for ``g*P + l >= c_out``.
* :func:`output_tiles` splits a layer that does not fit the weight memory into output-channel tiles.
* :func:`config_cmd` / :func:`encode_tokens`: the CONFIG and the TOKEN commands of a layer's input
  spikes ``x: (n, c_in)``: one command per token (``compact=False``) or with the all-zero tokens elided
  into the next token's ``skip`` count (``compact=True``, the default; trailing zero tokens are implicit).
* :func:`decode_beats` turns the beats back into the dense accumulators ``(n, c_out)``, which equal
  ``intops.linear_int8(x, weight)`` exactly (an elided zero token's accumulators are 0).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from golden_model import intops
from rtl.spike_accum import OP_CONFIG, OP_TOKEN

__all__ = ["SKIP_MAX", "SpikeAccumProtocolError", "bits", "groups", "output_tiles", "weight_rows", "config_cmd",
           "encode_tokens", "token_popcounts", "decode_beats"]

SKIP_MAX = 0xFFFF  # the 16-bit ``skip`` field


class SpikeAccumProtocolError(ValueError):
    """A layer that cannot be encoded, or beats that do not decode to the expected tokens."""


def bits(row: torch.Tensor | Iterable[int]) -> int:
    """A spike vector (0/1) -> integer, bit i = element i."""
    vals = row.tolist() if isinstance(row, torch.Tensor) else list(row)
    return sum(1 << i for i, b in enumerate(vals) if b)


def groups(c_out: int, lanes: int) -> int:
    """``G = ceil(c_out / P)`` output groups."""
    if c_out < 1 or lanes < 1:
        raise SpikeAccumProtocolError(f"c_out and lanes must be positive, got {c_out}, {lanes}")
    return -(-c_out // lanes)


def output_tiles(c_in: int, c_out: int, lanes: int, rows: int) -> list[tuple[int, int]]:
    """Output-channel ranges ``[o0, o1)`` of a layer tiled to ``rows`` weight rows: each tile has as many
    whole groups as fit (``G_tile = rows // c_in``); one tile when the layer fits. The tokens are sent once
    per tile and the tiles' accumulators concatenated. (Input channels beyond ``C_IN_MAX`` would need
    host-side partial sums and are not tiled here.)"""
    g_fit = rows // c_in if c_in >= 1 else 0
    if g_fit < 1:
        raise SpikeAccumProtocolError(f"c_in = {c_in} needs more than the {rows} weight rows for one group")
    step = g_fit * lanes
    return [(o, min(o + step, c_out)) for o in range(0, c_out, step)]


def weight_rows(weight: torch.Tensor, lanes: int, base: int = 0) -> list[dict]:
    """The ``wload`` beats of a layer: ``c_in * G`` rows from ``base``, lanes past ``c_out`` zero."""
    if not isinstance(weight, torch.Tensor) or weight.dtype != torch.int8 or weight.dim() != 2:
        raise SpikeAccumProtocolError("weight must be an int8 tensor (c_out, c_in)")
    c_out, c_in = weight.shape
    g = groups(c_out, lanes)
    pad = torch.zeros(g * lanes, c_in, dtype=torch.int8)
    pad[:c_out] = weight
    rows = pad.reshape(g, lanes, c_in).permute(2, 0, 1).reshape(c_in * g, lanes)  # row i * G + g, lane l
    return [{"addr": base + r, "data": row} for r, row in enumerate(rows.tolist())]


def config_cmd(c_in: int, c_out: int, lanes: int, base: int = 0) -> dict:
    """CONFIG of a layer whose rows start at ``base`` (range checks are the engine's: error codes)."""
    return {"op": OP_CONFIG, "c_in": c_in, "groups": groups(c_out, lanes), "base": base}


def encode_tokens(x: torch.Tensor, *, compact: bool = True) -> list[dict]:
    """TOKEN commands of the spikes ``x: (n, c_in)``; ``compact`` elides all-zero tokens (see module docs).

    A run of more than ``SKIP_MAX`` zero tokens before a non-zero one is sent as explicit ``x = 0``
    tokens carrying ``skip = SKIP_MAX`` each (such a token stands for ``SKIP_MAX + 1`` zero tokens).
    """
    intops.check_spikes("x", x)
    if x.dim() != 2:
        raise SpikeAccumProtocolError(f"x must be (tokens, c_in), got shape {tuple(x.shape)}")
    cmds: list[dict] = []
    zeros = 0
    for row in x:
        xb = bits(row)
        if compact and xb == 0:
            zeros += 1
            continue
        while zeros > SKIP_MAX:
            cmds.append({"op": OP_TOKEN, "x": 0, "skip": SKIP_MAX})
            zeros -= SKIP_MAX + 1
        cmds.append({"op": OP_TOKEN, "x": xb, "skip": zeros})
        zeros = 0
    return cmds


def token_popcounts(cmds: Iterable[dict]) -> list[int]:
    """``popcount(x)`` of every TOKEN command (the input of ``golden_model.perf.spike_accum_cycles``)."""
    return [int(c["x"]).bit_count() for c in cmds if c["op"] == OP_TOKEN]


def decode_beats(beats: Iterable[dict], n_tokens: int, c_out: int, lanes: int) -> torch.Tensor:
    """Dense int32 accumulators ``(n_tokens, c_out)`` from a layer's output beats (in order).

    Each token command yields ``G`` beats (``group`` 0..G-1, ``last`` on G-1) preceded by its ``skip``
    zero tokens; tokens after the last command are zero.
    """
    g = groups(c_out, lanes)
    acc = torch.zeros(n_tokens, g * lanes, dtype=torch.int32)
    pos, expect_g, skip = 0, 0, 0
    for n, b in enumerate(beats):
        if b["group"] != expect_g or b["last"] != int(expect_g == g - 1):
            raise SpikeAccumProtocolError(f"beat {n}: group {b['group']} last {b['last']}, expected group {expect_g}")
        if expect_g == 0:
            skip = b["skip"]
            pos += skip
        elif b["skip"] != skip:
            raise SpikeAccumProtocolError(f"beat {n}: skip {b['skip']} differs within a token ({skip})")
        if pos >= n_tokens:
            raise SpikeAccumProtocolError(f"beat {n}: token {pos} beyond {n_tokens} tokens")
        acc[pos, expect_g * lanes:(expect_g + 1) * lanes] = torch.tensor(b["data"], dtype=torch.int32)
        expect_g += 1
        if expect_g == g:
            expect_g, pos = 0, pos + 1
    if expect_g:
        raise SpikeAccumProtocolError(f"the last token has {expect_g} of {g} beats")
    return acc[:, :c_out].contiguous()
