"""Float SpikeVideoFormer: shapes, gradients, upstream names/count, RepConv fusion, attention math."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from golden_model.spikevideoformer import (
    ATTENTION_MODES,
    MS_Attention,
    RepConvBN,
    SpikeVideoFormer,
    SpikeVideoFormerConfig,
)

FULL_PARAMS = 55_358_952  # metaspikformer_8_512 with 1000 classes (published: 55 M)


def _randomise_bn(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN running statistics and affine terms."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.2)
            with torch.no_grad():
                m.weight.copy_(torch.randn(c, generator=gen))
                m.bias.copy_(torch.randn(c, generator=gen))


@pytest.fixture(scope="module")
def tiny_cfg() -> SpikeVideoFormerConfig:
    return SpikeVideoFormerConfig.tiny()


@pytest.mark.parametrize("mode", ATTENTION_MODES)
def test_tiny_forward_shape(tiny_cfg, mode):
    torch.manual_seed(0)
    model = SpikeVideoFormer(replace(tiny_cfg, attention=mode)).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 4, 64, 64))
    assert y.shape == (1, 10)
    assert torch.isfinite(y).all()
    assert ("block3.0.attn.attn_bn.weight" in model.state_dict()) == (mode == "hamming")
    assert model.block3[0].attn.attn_lif.v_threshold == (1.0 if mode == "hamming" else 0.5)


def test_backward_gives_conv_grads(tiny_cfg):
    torch.manual_seed(0)
    model = SpikeVideoFormer(tiny_cfg).train()
    x = torch.randn(2, 3, 4, 64, 64) * 2
    loss = F.cross_entropy(model(x), torch.tensor([1, 3]))
    loss.backward()
    for name in ("downsample1_1.encode_conv.weight", "ConvBlock1_1.0.conv1.weight",
                 "block3.0.attn.q_conv.0.body.0.weight", "block3.0.mlp.fc1_conv.weight",
                 "block4.0.attn.proj_conv.0.body.2.1.weight", "head.weight"):
        g = model.get_parameter(name).grad
        assert g is not None and g.abs().sum() > 0, name


def test_full_param_names_and_count():
    cfg = SpikeVideoFormerConfig.full()
    assert cfg.num_classes == 1000 and cfg.frames == 16 and cfg.img_size == 224
    with torch.device("meta"):
        model = SpikeVideoFormer(cfg)
    names = set(model.state_dict())
    expected = [
        "downsample1_1.encode_conv.weight", "downsample1_1.encode_conv.bias",
        "downsample1_1.encode_bn.running_var",
        "ConvBlock1_1.0.Conv.pwconv1.weight", "ConvBlock1_1.0.Conv.bn1.weight",
        "ConvBlock1_1.0.Conv.dwconv.weight", "ConvBlock1_1.0.Conv.pwconv2.weight",
        "ConvBlock1_1.0.Conv.bn2.bias", "ConvBlock1_1.0.conv1.weight", "ConvBlock1_1.0.bn1.weight",
        "ConvBlock1_1.0.conv2.weight", "ConvBlock1_1.0.bn2.running_mean",
        "downsample1_2.encode_conv.weight", "ConvBlock1_2.0.conv1.weight",
        "downsample2.encode_bn.weight", "ConvBlock2_1.0.Conv.dwconv.weight",
        "ConvBlock2_2.0.conv2.weight", "downsample3.encode_conv.weight",
        "block3.0.attn.q_conv.0.body.0.weight", "block3.0.attn.q_conv.0.body.1.bn.weight",
        "block3.0.attn.q_conv.0.body.1.bn.running_var", "block3.0.attn.k_conv.0.body.2.0.weight",
        "block3.0.attn.v_conv.0.body.2.1.weight", "block3.0.attn.v_conv.0.body.2.2.weight",
        "block3.5.attn.proj_conv.1.weight", "block3.5.attn.proj_conv.1.num_batches_tracked",
        "block3.5.attn.attn_bn.weight", "block3.2.mlp.fc1_conv.weight", "block3.2.mlp.fc1_conv.bias",
        "block3.2.mlp.fc1_bn.weight", "block3.2.mlp.fc2_conv.weight", "block3.2.mlp.fc2_bn.bias",
        "downsample4.encode_conv.weight", "block4.1.attn.q_conv.1.running_mean",
        "block4.1.mlp.fc2_conv.weight", "head.weight", "head.bias",
    ]
    missing = [n for n in expected if n not in names]
    assert not missing, missing
    assert "block3.6.attn.q_conv.1.weight" not in names and "block4.2.mlp.fc1_bn.weight" not in names
    assert model.get_parameter("downsample1_1.encode_conv.weight").shape == (64, 3, 7, 7)
    assert model.get_parameter("ConvBlock1_1.0.conv1.weight").shape == (256, 64, 3, 3)
    assert model.get_parameter("block3.0.attn.q_conv.0.body.2.0.weight").shape == (512, 1, 3, 3)
    assert model.get_parameter("block4.0.mlp.fc1_conv.weight").shape == (2560, 640, 1)
    assert model.get_parameter("head.weight").shape == (1000, 640)
    assert sum(p.numel() for p in model.parameters()) == FULL_PARAMS


def test_repconv_fusion_equals_module():
    gen = torch.Generator().manual_seed(1)
    seq = RepConvBN(12, 20)
    _randomise_bn(seq, gen)
    with torch.no_grad():
        for p in seq.parameters():
            if p.dim() == 4:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    seq.eval()
    x = (torch.rand(3, 12, 7, 9, generator=gen) < 0.3).float()
    w, b = seq.fused_conv3x3()
    assert w.shape == (20, 12, 3, 3) and b.shape == (20,)
    with torch.no_grad():
        ref = seq(x)
        fused = F.conv2d(x, w, b, padding=1)
    assert ref.shape == fused.shape
    assert torch.allclose(ref, fused, atol=1e-5, rtol=1e-5), (ref - fused).abs().max()


def test_bn_pad_uses_running_stats_in_training():
    gen = torch.Generator().manual_seed(2)
    seq = RepConvBN(4, 4)
    _randomise_bn(seq, gen)
    layer = seq[0].body[1]
    layer.train()
    y = layer(torch.randn(2, 4, 5, 5, generator=gen))
    assert y.shape == (2, 4, 7, 7)
    # stats were updated by this call (momentum 0.1) before the pad value is read, as upstream
    pad = layer.pad_value()
    assert torch.equal(y[:, :, 0, :], pad.view(1, 4, 1).expand(2, 4, 7))
    assert torch.equal(y[:, :, :, -1], pad.view(1, 4, 1).expand(2, 4, 7))


def test_hamming_attention_matches_explicit_formula():
    torch.manual_seed(3)
    t, b, c, h, w, heads = 3, 2, 8, 2, 3, 2
    attn = MS_Attention(c, heads, "hamming").eval()
    _randomise_bn(attn, torch.Generator().manual_seed(3))
    x = torch.randn(t, b, c, h, w) * 3
    with torch.no_grad():
        q, k, v = attn.qkv_spikes(x)
        assert q.shape == (t, b, heads, h * w, c // heads)
        assert set(q.unique().tolist()) <= {0.0, 1.0}
        out = attn.attend(q, k, v)
        # explicit: tokens of the whole clip jointly, order (t, h, w), one head at a time
        d = c // heads
        ref = torch.empty(t, b, heads, h * w, d)
        for bi in range(b):
            for hi in range(heads):
                qq = q[:, bi, hi].reshape(t * h * w, d)
                kk = k[:, bi, hi].reshape(t * h * w, d)
                vv = v[:, bi, hi].reshape(t * h * w, d)
                o = (2 * qq - 1) @ ((2 * kk - 1).T @ vv) / (2 * c)
                ref[:, bi, hi] = o.reshape(t, h * w, d)
        assert torch.allclose(out, ref, atol=1e-6)
        # forward = attend -> merge heads -> attn_bn -> attn_lif -> proj_conv
        merged = ref.transpose(-1, -2).reshape(t, b, c, h, w)
        bn = attn.attn_bn(merged.flatten(0, 1)).reshape(t, b, c, h, w)
        want = attn.proj_conv(attn.attn_lif(bn).flatten(0, 1)).reshape(t, b, c, h, w)
        assert torch.allclose(attn(x), want, atol=1e-6)


def test_dot2d_is_per_frame():
    torch.manual_seed(4)
    attn = MS_Attention(8, 2, "dot2d").eval()
    q, k, v = ((torch.rand(3, 1, 2, 6, 4) < 0.5).float() for _ in range(3))
    out = attn.attend(q, k, v)
    for ti in range(3):
        assert torch.allclose(out[ti], (q[ti] @ (k[ti].transpose(-2, -1) @ v[ti])) * 0.125)


def test_bad_clips_raise(tiny_cfg):
    model = SpikeVideoFormer(tiny_cfg)
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 3, 4, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 3, 4, 64, 64\)"):
        model(torch.zeros(1, 3, 5, 64, 64))  # wrong T
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(3, 4, 64, 64))
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(1, 3, 4, 32, 32))


def test_config_validation_and_dict():
    cfg = SpikeVideoFormerConfig.tiny()
    assert cfg.to_dict()["embed_dim"] == (16, 32, 64, 80)
    assert SpikeVideoFormerConfig.full(num_classes=400).num_classes == 400
    with pytest.raises(ValueError, match="attention"):
        replace(cfg, attention="softmax")
    with pytest.raises(ValueError, match="num_heads"):
        replace(cfg, num_heads=3)
    with pytest.raises(ValueError, match="multiple of 16"):
        replace(cfg, img_size=40)
