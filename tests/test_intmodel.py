"""Integer models: quantisation of the shipped trained checkpoints, determinism, traces, bad input."""

import pytest
import torch

from golden_model import intops
from golden_model.intlayers import Tracer
from golden_model.pipeline import compare, load_golden, quantize
from golden_model.train import test_split
from golden_model.zoo import build_model

MODELS = ["svformer-tiny", "spikevideoformer-tiny"]
# float test accuracy the shipped checkpoints reach (issue target: >= 90 % for the tiny SVFormer)
FLOAT_ACC = {"svformer-tiny": 0.90, "spikevideoformer-tiny": 0.90}
# accuracy points the integer model may lose (issue target for the tiny SVFormer: 1.0; the tiny
# SpikeVideoFormer measures 2.2 points on 500 test clips with post-training quantisation, see BENCHMARKS.md)
MAX_COST = {"svformer-tiny": 1.0, "spikevideoformer-tiny": 2.5}


@pytest.fixture(scope="module", params=MODELS)
def golden(request):
    return load_golden(request.param)


@pytest.fixture(scope="module")
def test_clips(golden):
    return test_split(golden.meta).batch(slice(None))   # the checkpoint's whole test split (500 clips)


def test_integer_model_within_one_point_of_float(golden, test_clips):
    res = compare(golden.float_model, golden.int_model, *test_clips, progress=False)
    assert res.deterministic
    assert res.float_acc >= FLOAT_ACC[golden.name], f"{golden.name}: float accuracy {res.float_acc:.3f}"
    assert res.cost <= MAX_COST[golden.name], f"{golden.name}: quantisation costs {res.cost:.2f} points"
    assert res.agreement >= 0.85, f"{golden.name}: float and integer agree on {res.agreement:.3f} of clips"


def test_quantisation_is_reproducible(golden):
    """Quantising the same checkpoint again gives the identical integer model and logits."""
    again = load_golden(golden.name)
    clip = test_split(golden.meta, size=4).batch(slice(None))[0]
    q = golden.int_model.quantize_clip(clip)
    assert torch.equal(golden.int_model(q), again.int_model(q))


def test_trace_records_every_layer_with_integer_dtypes(golden, test_clips):
    tracer = Tracer()
    clip = test_clips[0][:2]
    golden.int_model(golden.int_model.quantize_clip(clip), tracer)
    kinds = {k.split(":")[1] for k in tracer.keys()}
    assert {"spikes", "acc", "out", "counts"} <= kinds
    for key, t in tracer.records.items():
        assert not t.is_floating_point(), key
        if key.endswith(":spikes"):
            intops.check_spikes(key, t)
        if key.endswith(":out") and t.dtype == torch.int32 and not key.startswith("head"):
            intops.check_range(key, t, golden.int_model.res_bits)
    # the network really spikes: a trained model is neither silent nor saturated
    rates = torch.tensor([t.float().mean() for k, t in tracer.records.items() if k.endswith(":spikes")])
    assert 0.01 < float(rates.mean()) < 0.6


def test_trace_selection_and_attention_consistency(golden, test_clips):
    """The traced q/k/v spikes of an attention layer reproduce its traced counts via intops."""
    im = golden.int_model
    names = [k.removesuffix(":counts") for k in _all_keys(im, test_clips) if k.endswith(":counts")]
    assert names
    layer = names[0]
    prefix = layer.rsplit(".", 1)[0]
    want = {f"{prefix}.q_lif", f"{prefix}.k_lif", f"{prefix}.v_lif", layer}
    tracer = Tracer(want)
    im(im.quantize_clip(test_clips[0][:2]), tracer)
    assert {k.split(":")[0] for k in tracer.keys()} == want
    q, k, v = (tracer[f"{prefix}.{n}_lif:spikes"] for n in "qkv")
    attn = _find_attention(im, layer)
    if q.dim() == 5:  # SpikeVideoFormer traces q/k/v in (T, B, C, H, W)
        q, k, v = (x.flatten(3).transpose(2, 3) for x in (q, k, v))
    t, b, n, c = q.shape
    d = c // attn.heads

    def heads(x):
        x = x.reshape(t, b, n, attn.heads, d).permute(1, 3, 0, 2, 4)
        return x.reshape(b, attn.heads, t * n, d) if attn.window == "clip" else x

    o = intops.attention(heads(q), heads(k), heads(v), attn.mode)
    o = o.reshape(b, attn.heads, t, n, d).permute(2, 0, 3, 1, 4).reshape(t, b, n, c)
    assert torch.equal(o, tracer[f"{layer}:counts"])


def _all_keys(im, test_clips):
    tracer = Tracer()
    im(im.quantize_clip(test_clips[0][:1]), tracer)
    return tracer.keys()


def _find_attention(im, name):
    blocks = [b for _, b in getattr(im, "stages", [])] + list(getattr(im, "blocks3", [])) + \
        list(getattr(im, "blocks4", []))
    for blk in blocks:
        attn = getattr(getattr(blk, "attn", None), "attn", None)
        if attn is not None and attn.name == name:
            return attn
    raise KeyError(name)


@pytest.mark.parametrize("name", MODELS)
def test_bad_clips_are_rejected(name):
    g = load_golden(name)
    im = g.int_model
    good = torch.zeros(1, 3, im.frames, im.img_size, im.img_size)
    with pytest.raises(TypeError, match="int8"):
        im(good)                                  # float clip into the integer model
    with pytest.raises(TypeError, match="floating-point"):
        im.quantize_clip(good.to(torch.int8))
    with pytest.raises(ValueError, match="shape"):
        im(torch.zeros(1, 3, im.frames + 1, im.img_size, im.img_size, dtype=torch.int8))   # wrong T
    with pytest.raises(ValueError, match="shape"):
        im.quantize_clip(torch.zeros(3, im.frames, im.img_size, im.img_size))              # no batch axis
    with pytest.raises(ValueError, match="shape"):
        g.float_model(torch.zeros(1, 3, im.frames, im.img_size + 32, im.img_size + 32))


def test_quantize_rejects_unknown_models_and_empty_calibration():
    with pytest.raises(TypeError, match="no quantizer"):
        quantize(torch.nn.Linear(2, 2), [torch.zeros(1, 2)])
    with pytest.raises(ValueError, match="calibration"):
        quantize(build_model("svformer-tiny"), [])
