"""Energy / operations report (golden_model.energy), ``spikevid energy`` and ``spikevid model info``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from golden_model import energy as E
from golden_model.zoo import build_model
from spikevid.cli import main


def brute_conv_sops(conv: nn.Module, x: torch.Tensor) -> int:
    """For every active input, count the outputs it reaches (per axis, by enumerating taps)."""
    nd = len(conv.kernel_size)
    with torch.inference_mode():
        out_shape = conv(x).shape[2:]
    per_group = conv.out_channels // conv.groups
    total = 0
    for idx in torch.nonzero(x).tolist():
        pos = idx[2:]
        reach = 1
        for a in range(nd):
            k, s, p, d = conv.kernel_size[a], conv.stride[a], conv.padding[a], conv.dilation[a]
            reach *= sum(1 for o in range(out_shape[a]) for t in range(k) if o * s - p + t * d == pos[a])
        total += reach * per_group
    return total


def spikes(shape, rate, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < rate).float()


@pytest.mark.parametrize("conv, shape", [
    (nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (2, 4, 7, 7)),
    (nn.Conv2d(3, 5, 4, stride=2, padding=1), (1, 3, 8, 9)),
    (nn.Conv2d(6, 6, 5, padding=2, groups=6), (1, 6, 6, 6)),
    (nn.Conv2d(2, 3, 3, padding=2, dilation=2), (1, 2, 6, 5)),
    (nn.Conv1d(4, 8, 1), (2, 4, 10)),
    (nn.Conv3d(4, 4, (2, 3, 3), groups=2), (1, 4, 2, 3, 3)),
])
def test_conv_sops_equal_brute_force(conv, shape):
    x = spikes(shape, 0.3)
    assert E.conv_sops(conv, x) == brute_conv_sops(conv, x)
    assert E.conv_sops(conv, torch.zeros(shape)) == 0
    full = torch.ones(shape)  # all active: SOPs = dense MACs only without padding taps
    with torch.inference_mode():
        assert E.conv_sops(conv, full) <= E.dense_macs(conv, conv(full))


def test_linear_sops():
    lin = nn.Linear(5, 7)
    x = spikes((3, 4, 5), 0.4)
    assert E.linear_sops(lin, x) == int(x.sum()) * 7
    assert E.linear_sops(lin, torch.zeros(3, 5)) == 0


@pytest.fixture(scope="module")
def tiny_report():
    torch.manual_seed(0)
    model = build_model("svformer-tiny")
    clip = E.random_clip(model, seed=1)
    # capture the actual spike input of patch_embed2.proj to brute-force it
    captured = {}

    def grab(module, inputs, out):
        captured["x"] = inputs[0].clone()

    h = model.patch_embed2.proj.register_forward_hook(grab)
    report = E.profile_clip(model, clip, name="svformer-tiny")
    h.remove()
    return model, clip, report, captured["x"]


def test_tiny_svformer_rows(tiny_report):
    model, _, report, x = tiny_report
    names = [r.name for r in report.rows]
    assert names[0] == "patch_embed1.proj" and report.rows[0].input_kind == "real"
    assert report.rows[0].macs == report.rows[0].dense_macs > 0
    assert names.index("blocks3.0.attn.qkv") < names.index("blocks3.0.attn.kv_counts") \
        < names.index("blocks3.0.attn.readout") < names.index("blocks3.0.attn.proj")
    n_layers = sum(isinstance(m, E.WEIGHTED_LAYERS) for m in model.modules())
    assert len(report.rows) == n_layers + 2 * len(E.find_attention_modules(model))
    assert [r.index for r in report.rows] == list(range(len(report.rows)))
    for r in report.rows:
        if r.input_kind == "spike":
            assert 0.0 <= r.firing_rate <= 1.0 and r.macs == 0
            if not r.op.startswith("attn"):
                assert r.sops <= r.dense_macs
        else:
            assert r.firing_rate is None and r.sops == 0 and r.macs == r.dense_macs
    row = report.rows[names.index("patch_embed2.proj")]
    assert row.input_kind == "spike" and x.sum() > 0
    assert row.sops == brute_conv_sops(model.patch_embed2.proj, x)
    assert row.firing_rate == pytest.approx(float(x.mean()))
    assert report.total_sops > 0


def test_attention_counts_brute_force():
    from golden_model.spikevideoformer import MS_Attention
    from golden_model.svformer import Attention

    t, b, c, hw, heads = 2, 1, 8, 4, 2
    d = c // heads
    g = torch.Generator().manual_seed(3)
    for attn, shape in [(Attention(c, heads, t), (t, b, hw * hw, c)),
                        (MS_Attention(c, heads, "dot"), (t, b, c, hw, hw)),
                        (MS_Attention(c, heads, "dot2d"), (t, b, c, hw, hw)),
                        (MS_Attention(c, heads, "hamming"), (t, b, c, hw, hw))]:
        q, k, v = ((torch.rand(shape, generator=g) < 0.4).float() for _ in range(3))
        got = E.attention_rows_counts(attn, q, k, v)
        qh, kh, vh = attn.split_heads(q), attn.split_heads(k), attn.split_heads(v)  # (T,B,H,N,D)
        joint = getattr(attn, "mode", "dot2d") in ("hamming", "dot")
        if joint:  # window = the whole clip per (batch, head)
            qh, kh, vh = (z.permute(1, 2, 0, 3, 4).reshape(b * heads, -1, d) for z in (qh, kh, vh))
        else:
            qh, kh, vh = (z.reshape(t * b * heads, -1, d) for z in (qh, kh, vh))
        windows, n = qh.shape[:2]
        kv_pairs = sum(int(kh[w, i, a] * vh[w, i, e]) for w in range(windows) for i in range(n)
                       for a in range(d) for e in range(d))
        q_rows = sum(d for w in range(windows) for i in range(n) for a in range(d) if qh[w, i, a])
        if getattr(attn, "mode", None) == "hamming":
            kv_pairs += int(vh.sum()) + windows * d * d
            q_rows += windows * d * d + windows * n * d
        assert got["kv"][1] == kv_pairs and got["qkv"][1] == q_rows
        assert got["kv"][0] == got["qkv"][0] == windows * n * d * d


def test_energy_arithmetic(tiny_report, monkeypatch):
    model, clip, report, _ = tiny_report
    for r in report.rows:
        assert r.energy_pj == pytest.approx(r.sops * 0.9 + r.macs * 4.6)
    assert report.total_energy_pj == pytest.approx(sum(r.energy_pj for r in report.rows))
    assert report.total_energy_pj == pytest.approx(report.total_sops * 0.9 + report.total_macs * 4.6)
    other = E.profile_clip(model, clip, e_ac=1.0, e_mac=2.0)
    assert other.total_energy_pj == pytest.approx(report.total_sops + 2.0 * report.total_macs)
    monkeypatch.setattr(E, "E_AC", 0.0)
    assert E.profile_clip(model, clip).total_energy_pj == pytest.approx(report.total_macs * 4.6)


def test_silent_network_has_zero_sops():
    torch.manual_seed(0)
    model = build_model("svformer-tiny")
    for m in model.modules():
        if isinstance(m, E.LIF):
            m.v_threshold = 1e9  # no neuron ever fires
    report = E.profile_clip(model, E.random_clip(model))
    spike_rows = [r for r in report.rows if r.input_kind == "spike"]
    assert len(spike_rows) > 10
    assert all(r.sops == 0 and r.firing_rate == 0.0 for r in spike_rows)
    assert report.total_sops == 0 and all(n.spikes == 0 for n in report.neurons)
    # real-valued layers fed by silent ones still cost their dense MACs
    assert report.rows[0].input_kind == "real"
    assert any(r.name == "blocks1.0.attn" and r.input_kind == "real" for r in report.rows)


def test_json_round_trip(tiny_report):
    report = tiny_report[2]
    back = E.EnergyReport.from_json(report.to_json())
    assert back == report
    d = json.loads(report.to_json())
    assert d["totals"]["sops"] == report.total_sops
    assert "total:" in report.format_table()


def test_cli_energy_json(capsys):
    assert main(["energy", "--model", "svformer-tiny", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model"] == "svformer-tiny" and d["rows"] and d["totals"]["energy_pj"] > 0
    assert any("weights:" in n for n in d["notes"])


def test_cli_model_info_svformer(capsys):
    assert main(["model", "info", "svformer", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 13_801_612 == info["published_params"]
    assert info["dense_flops_per_clip"] == 2 * info["dense_macs_per_clip"]
    assert math.isclose(info["gflops_per_clip"], info["dense_flops_per_clip"] / 1e9)
    assert info["dense_macs_attention"] > 0


def test_cli_energy_checkpoint(tmp_path, capsys):
    train = pytest.importorskip("golden_model.train")
    torch.manual_seed(1)
    model = build_model("svformer-tiny")
    path = train.save_checkpoint(model, {"model": "svformer-tiny", "config": model.cfg.to_dict(),
                                         "metrics": {"test_acc": 0.5}}, tmp_path / "m.pt")
    assert main(["energy", "--checkpoint", str(path), "--clip-seed", "2", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert any(str(path) in n and "test acc 0.5000" in n for n in d["notes"])
    assert any("test clip 2" in n for n in d["notes"])
    assert main(["energy", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
