"""Float SVFormer: the upstream structure, parameter count, training-mode gradients, bad input."""

import pytest
import torch

from golden_model.svformer import SVFormer, SVFormerConfig


def test_full_config_has_the_upstream_parameter_count():
    with torch.device("meta"):
        model = SVFormer(SVFormerConfig.full())
    assert sum(p.numel() for p in model.parameters()) == 13_801_612


def test_tiny_forward_backward():
    torch.manual_seed(0)
    model = SVFormer(SVFormerConfig.tiny())
    x = torch.randn(2, 3, 4, 64, 64)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert model.patch_embed1.proj.weight.grad.abs().sum() > 0
    assert model.blocks1[0].act1.w.grad is not None


@pytest.mark.parametrize("shape", [(1, 3, 4, 64, 32), (1, 3, 5, 64, 64), (3, 4, 64, 64), (1, 2, 4, 64, 64)])
def test_bad_clip_shapes(shape):
    model = SVFormer(SVFormerConfig.tiny())
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(shape))


def test_bad_clip_dtype_and_config():
    model = SVFormer(SVFormerConfig.tiny())
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 3, 4, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiple of 32"):
        SVFormerConfig(img_size=100)
    with pytest.raises(ValueError, match="head_dim"):
        SVFormerConfig(embed_dim=(16, 32, 50, 64), head_dim=16)
