"""golden_model.qat: the fake quantisers reproduce the integer model, leave the float model intact,
pass gradients, and fine-tuning produces a loadable checkpoint (spikevid qat)."""

from __future__ import annotations

import json

import pytest
import torch

from golden_model.pipeline import calibration_clips, quantize
from golden_model.qat import calibrate_formats, fake_quant, fine_tune, frozen_batchnorm
from golden_model.train import load_checkpoint, test_split
from spikevid.cli import main


@pytest.fixture(scope="module", params=("svformer-tiny", "spikevideoformer-tiny"))
def trained(request):
    model, meta = load_checkpoint(request.param)
    return model, meta, calibration_clips(meta, 32)


def test_formats_are_the_quantizers(trained):
    model, _, calib = trained
    f = calibrate_formats(model, calib)
    with torch.inference_mode():
        im = quantize(model, calib)
    assert f.frac_bits == im.frac_bits
    assert f.in_scale == pytest.approx(im.in_scale, rel=0, abs=0)


def test_fake_quant_tracks_the_integer_model(trained):
    """On 96 test clips the fake-quantised float model's logits are closer to the integer model's than
    the plain float model's are (not equal: a spike network amplifies any rounding difference at a
    threshold, and the fake quantisers leave out the requant multipliers' and membranes' rounding)."""
    model, meta, calib = trained
    clips, _ = test_split(meta, size=96).batch(slice(None))
    with torch.inference_mode():
        im = quantize(model, calib)
        li = im.logits_float(im(im.quantize_clip(clips)))
        lf = model(clips).double()
    f = calibrate_formats(model, calib)
    with torch.inference_mode(), fake_quant(model, f):
        lq = model(clips).double()
    assert (lq - li).abs().mean() < (lf - li).abs().mean()


def test_context_restores_the_model_and_trains_its_weights(trained):
    model, meta, calib = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = dict(model.named_parameters())
    f = calibrate_formats(model, calib)
    clip, label = test_split(meta, size=2).batch(slice(None))
    model.train()
    try:
        with fake_quant(model, f), frozen_batchnorm(model):
            loss = torch.nn.functional.cross_entropy(model(clip), label)
            loss.backward()
    finally:
        model.eval()
    assert list(model.state_dict()) == list(before)                    # same names, same order
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BN statistics too
    assert all(p is params[n] for n, p in model.named_parameters())   # the same Parameter objects
    grads = [p.grad for p in model.parameters() if p.dim() >= 2]     # through the rounding (straight-through)
    assert grads and all(g is not None for g in grads)
    assert sum(bool(g.abs().sum() > 0) for g in grads) >= 0.9 * len(grads)
    model.zero_grad(set_to_none=True)


def test_fine_tune_and_cli(tmp_path):
    model, meta = load_checkpoint("svformer-tiny")
    calib = calibration_clips(meta, 16)
    w0 = model.head.weight.detach().clone()
    model, new = fine_tune(model, meta, calib, epochs=1, lr=1e-4, train_size=16, test_size=8, progress=False)
    assert not torch.equal(model.head.weight, w0)
    assert new["qat"]["epochs"] == 1 and new["qat"]["formats"]["frac_bits"] >= 1
    assert main(["qat", "--model", "svformer-tiny", "--epochs", "0"]) == 2


def test_cli_json_and_checkpoint(tmp_path, capsys):
    out = tmp_path / "q.pt"
    assert main(["qat", "--model", "svformer-tiny", "--epochs", "1", "--train-size", "8", "--calib", "8",
                 "--test-size", "8", "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) >= {"before", "after", "integer_gain_points", "checkpoint"}
    _, meta = load_checkpoint(str(out))
    assert meta["qat"]["before"]["clips"] == 8 and meta["qat"]["after"] == res["after"]
