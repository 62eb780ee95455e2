"""driver.program + driver.run: whole tiny models through the protocol (golden emulator), bit-exact."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from driver.emulator import Emulator, EmulatorConfig
from driver.program import ModelDoesNotFit, compile_model, pack_weight_rows
from driver.protocol import Device, TransportTimeout
from driver.run import run
from driver.transport import EmulatorTransport, Transport
from golden_model.intlayers import Tracer
from golden_model.pipeline import load_golden
from golden_model.train import test_split
from spikevid.cli import main

MODELS = ("svformer-tiny", "spikevideoformer-tiny")


@pytest.fixture(scope="module", params=MODELS)
def golden(request):
    return load_golden(request.param)


def _clips(g, n: int) -> torch.Tensor:
    clips, _ = test_split(g.meta, size=n).batch(slice(0, n))
    return g.int_model.quantize_clip(clips)


def _device(**cfg) -> Device:
    return Device(EmulatorTransport(Emulator(EmulatorConfig(**cfg))), timeout=2.0)


def test_pack_weight_rows_layout():
    w = torch.arange(5 * 3, dtype=torch.int8).reshape(5, 3)  # (C_out, K)
    rows = pack_weight_rows(w, 2, 1, 5)                        # channels 1..4, G = 2
    for i in range(3):
        for g in range(2):
            for lane in range(2):
                assert rows[i * 2 + g, lane] == w[1 + g * 2 + lane, i]


def test_whole_model_bit_exact(golden):
    """Logits and every offloaded layer's output (spikes, requant outputs) equal the golden model's."""
    x = _clips(golden, 2)
    dev = _device()
    prog = compile_model(golden.int_model, dev.info())
    want_tr, got_tr = Tracer(), Tracer()
    want = golden.int_model(x, want_tr)
    res = run(prog, x, dev, progress=False, tracer=got_tr)
    assert torch.equal(res.logits, want)
    assert got_tr.keys(), "no offloaded layer recorded anything"
    for key in got_tr.keys():
        assert torch.equal(got_tr[key], want_tr[key]), key
    kinds = {p.kind for p in prog.plans.values()}
    assert {"lif", "attention"} <= kinds and kinds & {"linear", "conv"}
    assert sum(s.counters.get("linear_busy", 0) for s in res.layers) > 0
    assert sum(s.counters.get("attention_busy", 0) for s in res.layers) > 0
    _check_link_split(res.layers)


def test_device_without_attention_engine(golden):
    """INFO ``att_dim_max = 0``: attention layers run on the host, the logits still equal the golden model's."""
    x = _clips(golden, 1)
    dev = _device(att_dim_max=0, att_max_tokens=0)
    prog = compile_model(golden.int_model, dev.info())
    att = [name for name in prog.host_layers if "att" in name]
    assert att and not any(p.kind == "attention" for p in prog.plans.values())
    res = run(prog, x, dev, progress=False)
    assert torch.equal(res.logits, golden.int_model(x))
    assert sum(s.counters.get("attention_busy", 0) for s in res.layers) == 0
    with pytest.raises(ValueError, match="no attention engine"):
        dev.attention([], mode="dot", dim=4, tokens=0, p_base=0, out_bits=8)


def _check_link_split(layers) -> None:
    """The host's bytes by class add up to the device's own byte counters, layer by layer, and each
    class appears where it must: weights only for spike-accumulate layers, activations and results
    for every layer."""
    for s in layers:
        assert sum(s.link.values()) == s.counters["bytes_in"] + s.counters["bytes_out"], s.name
        assert s.link["activations"] > 0 and s.link["results"] > 0 and s.link["control"] > 0, s.name
        assert (s.link["weights"] > 0) == (s.kind in ("linear", "conv")), s.name


def test_tiled_on_a_small_device(golden):
    """Small memories and frames force output-channel tiles, split fan-ins, membrane tiles, many frames."""
    x = _clips(golden, 1)
    dev = _device(lanes=4, in_max=100, weight_rows=600, param_channels=40, membrane_rows=300, max_payload=600)
    prog = compile_model(golden.int_model, dev.info())
    assert any(len(p.tiles) > 1 for p in prog.plans.values())
    assert any(t.k_hi - t.k_lo < p.c_in for p in prog.plans.values() for t in p.tiles)
    res = run(prog, x, dev, progress=False)
    assert torch.equal(res.logits, golden.int_model(x))
    _check_link_split(res.layers)


def test_model_that_does_not_fit(golden):
    dev = _device(lanes=4, in_max=8, weight_rows=4)
    with pytest.raises(ModelDoesNotFit, match="weight rows"):
        compile_model(golden.int_model, dev.info())


def test_bad_clips_rejected_before_sending(golden):
    dev = _device()
    prog = compile_model(golden.int_model, dev.info())
    x = _clips(golden, 1)
    dev.clear_counters()
    for bad in (x.float(), x[:, :, :-1], x[:, :2], x.to(torch.int32), x.numpy()):
        with pytest.raises((TypeError, ValueError)):
            run(prog, bad, dev, progress=False)
    assert dev.counters()["frames"] == 1  # only this COUNTERS request since the clear


class _Silent(Transport):
    """A transport whose device never answers."""

    def write(self, data: bytes) -> None:
        pass

    def read(self, n: int, timeout: float) -> bytes:
        raise TransportTimeout(f"no answer within {timeout} s")


def test_silent_transport_times_out(golden):
    info = _device().info()
    prog = compile_model(golden.int_model, info)
    dev = Device(_Silent(), timeout=0.05)
    with pytest.raises(TransportTimeout):
        run(prog, _clips(golden, 1), dev, progress=False)


def test_cli_run_json(capsys):
    assert main(["run", "--model", "svformer-tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["logits_equal_golden"] is True and out["transport"] == "emulator"
    assert out["layers"] and sum(r["cycles"] for r in out["layers"]) > 0


def test_verilator_end_to_end(golden):
    """Two clips through the RTL accelerator compiled by Verilator: logits and every offloaded layer's
    output equal the golden model's, and every layer's engine counters (busy cycles, spikes, accumulate
    operations) equal the emulator's cycle models on the same device configuration."""
    from driver.transport import VerilatorTransport
    from rtl.accelerator import Accelerator, AcceleratorConfig
    from sim.byte_model import build_byte_model

    cfg = AcceleratorConfig()
    rtl_dev = Device(VerilatorTransport(build_byte_model("accelerator", Accelerator)), timeout=600)
    emu_dev = _device(**{k: v for k, v in cfg.info().items() if k != "version"})
    assert rtl_dev.info() == emu_dev.info()
    prog = compile_model(golden.int_model, rtl_dev.info())
    x = _clips(golden, 2)
    want_tr, got_tr = Tracer(), Tracer()
    want = golden.int_model(x, want_tr)
    got = run(prog, x, rtl_dev, progress=False, tracer=got_tr)
    rtl_dev.close()
    emu = run(prog, x, emu_dev, progress=False)
    assert torch.equal(got.logits, want)
    for key in got_tr.keys():
        assert torch.equal(got_tr[key], want_tr[key]), key
    assert rtl_dev.transport.cycles and rtl_dev.transport.cycles > 0
    keys = [k for k in emu.layers[0].counters if k.endswith(("_busy", "_spikes", "_acc_ops"))]
    assert keys
    for g, e in zip(got.layers, emu.layers, strict=True):
        assert g.name == e.name
        assert {k: g.counters[k] for k in keys} == {k: e.counters[k] for k in keys}, g.name
        assert g.link == e.link, g.name  # the same frames on the link, class by class
    _check_link_split(got.layers)


def test_verilator_icebreaker_configuration():
    """The iCEBreaker board's accelerator (``bitstreams.boards``: P = 4, in_max = 64, 256 weight rows, no
    attention engine) in Verilator: a clip of svformer-tiny, tiled to the small memories, with attention on
    the host, gives the golden logits and equals the emulator's engine counters layer by layer."""
    from bitstreams.boards import get_config
    from driver.transport import VerilatorTransport
    from rtl.accelerator import Accelerator
    from sim.byte_model import build_byte_model

    g = load_golden("svformer-tiny")
    cfg = get_config("icebreaker").accel_config()
    fields = dataclasses.asdict(cfg)
    rtl_dev = Device(VerilatorTransport(build_byte_model("accelerator", lambda: Accelerator(**fields), fields)),
                     timeout=600)
    emu_dev = _device(**{k: v for k, v in cfg.info().items() if k != "version"})
    assert rtl_dev.info() == emu_dev.info()
    prog = compile_model(g.int_model, rtl_dev.info())
    assert prog.summary()["by_kind"].get("attention", 0) == 0
    x = _clips(g, 1)
    got = run(prog, x, rtl_dev, progress=False)
    rtl_dev.close()
    emu = run(prog, x, emu_dev, progress=False)
    assert torch.equal(got.logits, g.int_model(x))
    keys = [k for k in emu.layers[0].counters if k.endswith(("_busy", "_spikes", "_acc_ops"))]
    for a, e in zip(got.layers, emu.layers, strict=True):
        assert {k: a.counters[k] for k in keys} == {k: e.counters[k] for k in keys}, a.name
        assert a.link == e.link, a.name


def test_cli_run_verilator():
    assert main(["run", "--model", "svformer-tiny", "--transport", "verilator"]) == 0
