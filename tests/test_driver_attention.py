"""driver.attention: window encodings and read-out decoding against golden_model.intops (pure Python)."""

from __future__ import annotations

import pytest
import torch

import driver.attention as da
from golden_model import intops, perf
from sim.attention_model import EngineModel


def _spikes(gen: torch.Generator, n: int, dim: int, p: float) -> torch.Tensor:
    return (torch.rand(n, dim, generator=gen) < p).to(torch.int8)


def _run(cmds: list[dict], dim_max: int, lanes: int, max_tokens: int = 4096) -> tuple[list[dict], EngineModel]:
    model = EngineModel(dim_max, lanes, max_tokens, 1)
    beats = [b for c in cmds for b, _ in model.command(c)]
    return beats, model


@pytest.mark.parametrize("mode", ["dot", "hamming"])
@pytest.mark.parametrize("compact", [False, True])
def test_encode_decode_equals_intops(mode, compact):
    gen = torch.Generator().manual_seed(3)
    for density in (0.0, 0.02, 0.1, 0.5, 1.0):
        for dim, lanes in ((16, 16), (20, 8), (7, 4)):
            k, q = _spikes(gen, 37, dim, density), _spikes(gen, 23, dim, density)
            v = _spikes(gen, 37, dim, 0.4)
            cmds = da.encode_window(k, v, q, mode, compact=compact)
            beats, model = _run(cmds, 64, lanes)
            assert model.error == 0, (mode, density, dim, model.error_code)
            got = da.decode_readout(beats, q.shape[0], dim, lanes, mode)
            assert torch.equal(got, intops.attention(q, k, v, mode)), (mode, compact, density, dim)
            want = perf.attention_cycles(k, v, q, dim, lanes, mode, compact=compact)["busy"]
            assert model.busy_cycles == want


def test_compact_saves_the_empty_tokens():
    gen = torch.Generator().manual_seed(4)
    k, v, q = (_spikes(gen, 50, 16, 0.03) for _ in range(3))
    for mode in ("dot", "hamming"):
        plain = perf.attention_cycles(k, v, q, 16, 16, mode)["busy"]
        comp = perf.attention_cycles(k, v, q, 16, 16, mode, compact=True)
        spikes = comp["spikes"]
        assert comp["busy"] < plain
        if mode == "dot":
            assert comp["busy"] == 2 + spikes       # the CONFIG + one cycle per spike
    cmds = da.encode_window(k, v, q, "hamming", compact=True)
    pairs = [c for c in cmds if c["op"] == da.OP_KV and c.get("mode")]
    empty = int((k.sum(1) == 0).sum())
    assert len(pairs) == empty // 2 and cmds[0]["tokens"] == 50


def test_long_skip_runs_split(monkeypatch):
    monkeypatch.setattr(da, "SKIP_MAX", 3)
    k = torch.ones(2, 4, dtype=torch.int8)
    q = torch.zeros(11, 4, dtype=torch.int8)
    q[9, 1] = 1
    for mode in ("dot", "hamming"):
        cmds = da.encode_window(k, k, q, mode)
        assert all(c.get("skip", 0) <= 3 for c in cmds)
        beats, _ = _run(cmds, 4, 4)
        assert torch.equal(da.decode_readout(beats, 11, 4, 4, mode), intops.attention(q, k, k, mode))


def test_bad_windows_and_beats_raise():
    k = torch.ones(3, 4, dtype=torch.int8)
    with pytest.raises(da.AttentionProtocolError, match="mode"):
        da.encode_window(k, k, k, "softmax")
    with pytest.raises(da.AttentionProtocolError, match="dim"):
        da.encode_window(k, k, torch.ones(3, 5, dtype=torch.int8), "dot")
    with pytest.raises(da.AttentionProtocolError, match="tokens"):
        da.encode_window(k, k[:2], k, "dot")
    with pytest.raises(ValueError):
        da.encode_window(k * 2, k, k, "dot")  # not spikes
    with pytest.raises((TypeError, ValueError)):
        da.encode_window(k.float(), k, k, "dot")
    beat = {"data": [1, 2, 3, 4], "group": 0, "last": 1, "skip": 0, "const": 0}
    with pytest.raises(da.AttentionProtocolError, match="decoded"):
        da.decode_readout([beat, beat], 1, 4, 4, "dot")
    with pytest.raises(da.AttentionProtocolError, match="constant"):
        da.decode_readout([dict(beat, skip=2)], 3, 4, 4, "hamming")
    with pytest.raises(da.AttentionProtocolError, match="group"):
        da.decode_readout([dict(beat, group=1)], 1, 8, 4, "dot")
    with pytest.raises(da.AttentionProtocolError, match="inside a token"):
        da.decode_readout([dict(beat, last=0)], 1, 8, 4, "dot")
