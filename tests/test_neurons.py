"""Our float neurons against SpikingJelly 2.0 as an oracle.

SpikingJelly is installed without its dependencies (they pull torchvision, torchaudio, a different
torch and CUDA wheels): ``pip install --no-deps spikingjelly==2.0.0 loguru``. Its
``activation_based.neuron`` then imports on a CPU-only machine (loguru is its one hard import).

Oracle neurons: ``LIFNode(tau=2, detach_reset=True, step_mode='m')`` with its default
``surrogate.Sigmoid()`` (alpha 4) and ``ParametricLIFNode(init_tau=2, detach_reset=True,
step_mode='m', surrogate_function=surrogate.ATan())`` (alpha 2), both with hard reset to 0 and
``decay_input=True`` -- the neurons of upstream SpikeVideoFormer and SVFormer.
"""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import functional, neuron, surrogate

from golden_model.neurons import LIF, PLIF

SHAPES = [(8, 3, 5), (16, 2, 4, 6, 6), (2, 60)]


def _inputs(shape, seed: int) -> torch.Tensor:
    """Random currents plus values that put the membrane exactly on the threshold.

    From v = 0 an input of 2.0 charges to exactly 1.0 (tau 2 or w = 0); with a threshold of 1
    that must fire (``v >= v_threshold``). 1.0 followed by 1.5 gives 0.5 then exactly 1.0.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 1.5 + 0.8
    flat = x.view(shape[0], -1)
    n = flat.shape[1]
    flat[0, : n // 3] = 2.0  # exactly at threshold at t = 0
    if shape[0] > 2:
        flat[1, n // 3: 2 * n // 3] = 1.0
        flat[2, n // 3: 2 * n // 3] = 1.5
        flat[1, 0] = 0.0  # reset at t = 0 -> v = 0, then decays
    return x


def _sj_lif(v_threshold: float = 1.0) -> neuron.LIFNode:
    return neuron.LIFNode(tau=2.0, v_threshold=v_threshold, detach_reset=True, step_mode="m")


def _sj_plif(v_threshold: float = 1.0) -> neuron.ParametricLIFNode:
    return neuron.ParametricLIFNode(init_tau=2.0, v_threshold=v_threshold, detach_reset=True,
                                    step_mode="m", surrogate_function=surrogate.ATan())


def test_oracle_is_spikingjelly_2():
    from importlib.metadata import version

    import spikingjelly

    assert version("spikingjelly").split(".")[0] == "2", version("spikingjelly")
    assert spikingjelly.__name__ == "spikingjelly"
    sj = _sj_lif()
    assert isinstance(sj.surrogate_function, surrogate.Sigmoid) and sj.surrogate_function.alpha == 4.0
    assert sj.v_reset == 0.0 and sj.decay_input and sj.detach_reset


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("v_threshold", [1.0, 0.5])
def test_lif_matches_spikingjelly(shape, v_threshold):
    x = _inputs(shape, seed=len(shape) * 10 + int(v_threshold * 2))
    if v_threshold == 0.5:
        x = x / 2  # keep the exact-threshold entries exact
    ours, sj = LIF(tau=2.0, v_threshold=v_threshold), _sj_lif(v_threshold)

    # forward without a graph (our in-place inference path)
    with torch.no_grad():
        s_sj = sj(x)
        functional.reset_net(sj)
        s_ours = ours(x)
    assert torch.equal(s_ours, s_sj)
    assert s_sj.sum() > 0 and (s_sj == 0).sum() > 0
    assert bool(s_sj.view(shape[0], -1)[0, 0] == 1)  # exactly at threshold fires

    # forward with a graph and the surrogate-gradient backward
    g = torch.Generator().manual_seed(7)
    grad_out = torch.randn(shape, generator=g)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    sa = ours(xa)
    sb = sj(xb)
    functional.reset_net(sj)
    assert torch.equal(sa.detach(), sb.detach())
    (sa * grad_out).sum().backward()
    (sb * grad_out).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)
    assert xa.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("w", [0.0, 0.8, -1.3])
def test_plif_matches_spikingjelly(shape, w):
    x = _inputs(shape, seed=len(shape) * 100 + int(w * 10))
    ours, sj = PLIF(init_tau=2.0), _sj_plif()
    with torch.no_grad():
        ours.w.fill_(w)
        sj.w.fill_(w)
    assert ours.w.shape == sj.w.shape == torch.Size([])

    with torch.no_grad():
        s_sj = sj(x)
        functional.reset_net(sj)
        s_ours = ours(x)
    assert torch.equal(s_ours, s_sj)
    assert s_sj.sum() > 0 and (s_sj == 0).sum() > 0
    if w == 0.0:
        assert bool(s_sj.view(shape[0], -1)[0, 0] == 1)  # sigmoid(0) = 1/2: 2.0 charges to exactly 1.0

    g = torch.Generator().manual_seed(11)
    grad_out = torch.randn(shape, generator=g)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    sa = ours(xa)
    sb = sj(xb)
    functional.reset_net(sj)
    assert torch.equal(sa.detach(), sb.detach())
    (sa * grad_out).sum().backward()
    (sb * grad_out).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.w.grad, sj.w.grad, rtol=1e-4, atol=1e-5)
    assert ours.w.grad.abs() > 0


def test_plif_init_equals_spikingjelly():
    for tau in (2.0, 3.0, 1.5):
        assert torch.allclose(PLIF(init_tau=tau).w.detach(), neuron.ParametricLIFNode(init_tau=tau).w.detach())


def test_membrane_starts_at_zero_each_call():
    """SpikingJelly keeps the membrane between calls until ``reset_net``; ours starts at 0 each call."""
    x = _inputs((4, 10), seed=3)
    ours, sj = LIF(), _sj_lif()
    with torch.no_grad():
        first = sj(x)
        functional.reset_net(sj)
        assert torch.equal(ours(x), first)
        assert torch.equal(ours(x), first)
