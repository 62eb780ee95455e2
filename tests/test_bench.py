"""Issue 6: the cycle model without the protocol, ``spikevid bench`` and its CPU / GPU / board facts."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from benchmarks import compare
from driver.cycle_model import COUNTER_KEYS, COUNTERS_OVERHEAD, model_program
from driver.emulator import Emulator, EmulatorConfig
from driver.program import compile_model
from driver.protocol import Device
from driver.run import run
from driver.transport import EmulatorTransport
from golden_model.pipeline import load_golden
from golden_model.train import test_split
from spikevid.cli import main

MODELS = ("svformer-tiny", "spikevideoformer-tiny")
# the emulator's defaults, the RTL accelerator's limits, and a small device that tiles everything
DEVICES = {"emulator": {}, "rtl": compare.rtl_device_config(),
           "small": {"lanes": 4, "in_max": 100, "weight_rows": 600, "param_channels": 40, "membrane_rows": 300,
                     "max_payload": 600},
           "wide": {"lanes": 32, "att_dim_max": 16}}  # attention engine with fewer lanes (16) than the device


_GOLDEN: dict = {}


def _golden(name: str):
    if name not in _GOLDEN:
        _GOLDEN[name] = load_golden(name)
    return _GOLDEN[name]


@pytest.fixture(scope="module", params=MODELS)
def golden(request):
    return _golden(request.param)


def _clips(g, n: int) -> torch.Tensor:
    clips, _ = test_split(g.meta, size=n).batch(slice(0, n))
    return g.int_model.quantize_clip(clips)


def _assert_model_equals_run(program, x, device) -> None:
    modelled = model_program(program, x)
    measured = run(program, x, device, progress=False)
    assert torch.equal(modelled.logits, measured.logits)
    assert [m.name for m in modelled.layers] == [s.name for s in measured.layers]
    for m, s in zip(modelled.layers, measured.layers, strict=True):
        assert m.cycles == s.cycles, s.name
        want = {k: s.counters.get(k, 0) for k in COUNTER_KEYS}
        assert {k: m.counters.get(k, 0) for k in COUNTER_KEYS} == want, s.name
        for k in ("bytes_in", "bytes_out"):  # the layer's frames; driver.run adds two COUNTERS frames per call
            assert m.counters[k] == s.counters[k] - s.calls * COUNTERS_OVERHEAD[k], (s.name, k)
        assert (m.sops, m.in_spikes, m.calls) == (s.sops, s.in_spikes, s.calls), s.name


@pytest.mark.parametrize(("model", "device", "clips"), [
    ("svformer-tiny", "emulator", 2), ("svformer-tiny", "small", 1), ("svformer-tiny", "wide", 1),
    ("spikevideoformer-tiny", "emulator", 1)])
def test_cycle_model_equals_emulator(model, device, clips):
    """Per layer, every engine counter and the link bytes of the closed-form model equal the emulator's
    (a batch of two clips; whole layers, heavy tiling on a small device, an attention
    engine narrower than the device)."""
    g = _golden(model)
    dev = Device(EmulatorTransport(Emulator(EmulatorConfig(**DEVICES[device]))), timeout=5.0)
    program = compile_model(g.int_model, dev.info())
    _assert_model_equals_run(program, _clips(g, clips), dev)


def test_cycle_model_equals_rtl():
    """The same on the RTL accelerator (Verilator): the counters the hardware reports."""
    g = _golden("svformer-tiny")
    dev = compare._open_device("verilator")
    try:
        program = compile_model(g.int_model, dev.info())
        _assert_model_equals_run(program, _clips(g, 1), dev)
    finally:
        dev.close()


def test_sampled_tokens(golden):
    """Sampled tokens of linear / conv layers: counters equal the model, outputs equal the golden ops."""
    subject = compare.Subject(golden.name, golden.float_model, golden.int_model, None, _clips(golden, 1), True, "")
    program = compile_model(golden.int_model, Device(EmulatorTransport(Emulator()), timeout=5.0).info())
    names = [n for n, p in program.plans.items() if p.kind in ("linear", "conv")][:3]
    m = model_program(program, subject.x, capture=names)
    assert set(m.inputs) == set(names)
    rows = compare.sample_rtl(subject, m.inputs, tokens=40, transport="emulator", progress=False)
    assert len(rows) == 3
    assert all(r["counters_equal"] and r["outputs_equal"] and r["tokens"] <= 40 for r in rows)


def test_cli_bench_json(tmp_path, capsys):
    """``spikevid bench`` on a tiny model with the emulator: the JSON labels every figure; no GPU here."""
    rc = main(["bench", "--model", "svformer-tiny", "--transport", "emulator", "--repeats", "1", "--layer-repeats",
               "1", "--batches", "1", "--out", str(tmp_path), "--figures", str(tmp_path / "fig"), "--json",
               "--report", str(tmp_path / "none.json")])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    r = json.loads((tmp_path / "bench_svformer-tiny.json").read_text())
    assert printed["model"] == r["model"] == "svformer-tiny"
    assert (tmp_path / "fig" / "bench_svformer-tiny.png").stat().st_size > 0
    a = r["accelerator"]
    assert a["cycle_model_exact"] is True and a["busy_cycles"] == a["model_cycles"] > 0
    assert a["label"] == "modelled (emulator)" and r["clock"]["label"] == "assumed"
    acc_rows = [x for x in r["layers"] if x.get("accel")]
    assert acc_rows and all(x["accel"]["label"] == "modelled (emulator)" and x["accel"]["model_exact"]
                            for x in acc_rows)
    assert {x["op"] for x in acc_rows} >= {"lif", "attention"}
    assert any(x["where"] == "host" and x["macs"] > 0 for x in r["layers"])
    assert r["cpu"]["1"]["float"]["median_s"] > 0 and r["cpu"]["1"]["int"]["median_s"] > 0
    assert a["link"]["total"] > 0 and a["link"]["uart_s"] > a["link"]["fast_link_s"] > 0
    assert r["goals"]["cycle_model_exact"]["met"] is True
    if not torch.cuda.is_available():
        assert r["gpu"] is None and r["gpu_summary"] is None and "no CUDA" in r["gpu_note"]
        assert all(x["gpu_float_s"] is None for x in r["layers"])
        assert r["goals"]["latency_below_gpu"]["met"] is None
        assert r["goals"]["ge_20x_gpu_sops_per_core_cycle"]["met"] is None


def test_no_gpu_no_figures(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert compare.gpu_properties() is None
    assert compare.gpu_times(nn.Linear(2, 2), torch.zeros(1, 2)) is None


def test_gpu_summary_from_measured_figures(monkeypatch):
    """The GPU path of the summary (SOPs per CUDA-core-cycle, GPU cycles, energy, goals) on the figures a
    GPU run returns, injected here because this machine has none."""
    from golden_model.energy import profile_clip

    g = _golden("svformer-tiny")
    clips, _ = test_split(g.meta, size=1).batch(slice(0, 1))
    subject = compare.Subject(g.name, g.float_model, g.int_model, clips, g.int_model.quantize_clip(clips), True, "")
    energy = profile_clip(g.float_model, clips, g.name)
    accel = compare.measured_run(subject, "emulator", progress=False)
    cpu = {"1": {"float": {"median_s": 0.05, "min_s": 0.05}, "int": {"median_s": 0.07, "min_s": 0.07},
                 "float_per_clip_s": 0.05, "int_per_clip_s": 0.07}}
    fake = {"device": {"name": "fake", "capability": "9.0", "sms": 132, "cores_per_sm": 128, "cuda_cores": 16896,
                       "memory_gib": 80.0},
            "batches": {b: {"median_s": 5e-4 * int(b), "min_s": 1e-3, "runs": [1e-3], "per_clip_s": 5e-4,
                            "cycles": 1e6, "per_clip_cycles": 1e6 / int(b), "sm_clock_mhz": 1980.0, "power_w": 300.0,
                            "clock_source": "nvidia-smi clocks.sm"} for b in ("1", "16")}}
    layers = compare._per_layer(subject, energy, accel, {}, {}, [])
    r = compare.summarise(subject, energy, accel, [], compare.board_clock("/nonexistent.json"), cpu, fake, layers, {})
    gs = r["gpu_summary"]["1"]
    want = compare.sops_per_core_cycle(r["totals"]["spike_sops"], 5e-4, 1980.0, 16896)
    assert gs["sops_per_core_cycle"] == pytest.approx(want) and want > 0
    assert gs["energy_uj"] == pytest.approx(300.0 * 5e-4 * 1e6)
    goal = r["goals"]["ge_20x_gpu_sops_per_core_cycle"]
    assert goal["value"] == pytest.approx(r["accelerator"]["ops_per_lane_cycle"] / want)
    assert goal["met"] is True  # about 3 orders of magnitude apart at these figures
    assert r["goals"]["latency_below_gpu"]["gpu_s"] == 5e-4 and r["goals"]["latency_below_cpu"]["met"] is True
    assert "GPU fake" in compare.format_report(r)


def test_cuda_cores_and_ops_per_cycle():
    assert compare.cuda_cores_per_sm(9, 0) == 128 and compare.cuda_cores_per_sm(8, 0) == 64
    assert compare.cuda_cores_per_sm(8, 6) == 128 and compare.cuda_cores_per_sm(1, 0) is None
    assert compare.sops_per_core_cycle(1000, 1e-6, 1000.0, 10) == pytest.approx(0.1)
    assert compare.sops_per_core_cycle(1000, 1e-6, None, 10) is None


def test_board_clock(tmp_path):
    missing = compare.board_clock(tmp_path / "missing.json")
    assert missing["label"] == "assumed" and missing["mhz"] == compare.ASSUMED_CLOCK_MHZ
    assert missing["uart_baud"] == compare.ASSUMED_UART_BAUD
    rep = tmp_path / "ulx3s-85f.json"
    rep.write_text(json.dumps({"clocks": {"sync": {"constraint_mhz": 40.0, "fmax_mhz": 44.5}}, "uart_baud": 1_000_000,
                               "config": {"lanes": 16}}))
    c = compare.board_clock(rep)
    assert (c["mhz"], c["uart_baud"], c["lanes"], c["label"]) == (40.0, 1_000_000, 16, "report")
    rep.write_text(json.dumps({"clocks": {"clk25": {"constraint_mhz": 50.0, "fmax_mhz": 46.9}}}))
    c = compare.board_clock(rep)
    assert c["mhz"] == 46.9 and c["uart_baud"] == compare.ASSUMED_UART_BAUD and "assumed" in c["source"]


def test_timing_helpers():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    t = compare.time_call(lambda: model(torch.zeros(1, 8)), 3)
    assert len(t["runs"]) == 3 and 0 < t["min_s"] <= t["median_s"]
    lt = compare.layer_times(model, torch.zeros(1, 8), {"0", "2"}, repeats=2)
    assert set(lt) == {"0", "2"} and all(v > 0 for v in lt.values())
    assert compare.execution_order(model, torch.zeros(1, 8), {"2", "0"}) == ["0", "2"]


def test_calibrate_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    x = torch.randn(2, 3, 8, 8) * 5 + 3
    compare.calibrate_batchnorm(model, x)
    assert not model.training
    with torch.no_grad():
        y = model(x)
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (y.var(dim=(0, 2, 3)) - 1).abs().max() < 1e-3  # BatchNorm keeps the unbiased variance


def test_attention_window_too_long_for_a_frame():
    """Like the driver, the model refuses a window whose KV commands exceed one frame; with
    ``long_frames`` (full-size modelling) it counts the window as one frame."""
    from driver.cycle_model import ModelledLayer, _attention_window
    from driver.protocol import VERSION, DeviceInfo

    info = DeviceInfo(VERSION, 16, 256, 1024, 256, 1024, 32, 256, 200, 100_000_000)  # KV: 7 + 50 x 5 bytes
    kp, qp = [1, 0] * 50, [2, 0, 1] * 30
    with pytest.raises(ValueError, match="more than one frame"):
        _attention_window(ModelledLayer("a", "attention"), kp, qp, "dot", 16, 16, info)
    st = ModelledLayer("a", "attention")
    _attention_window(st, kp, qp, "dot", 16, 16, info, long_frames=True)
    assert st.frames == 1 and st.long_frames == 1
    assert st.counters["attention_busy"] == 2 + 50 + (30 * 2 + 30 * 1) + 1  # config, build, readout, constant
