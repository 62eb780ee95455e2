"""The integer primitives against independent references (Python ints, float64, explicit formulas)."""

import pytest
import torch
import torch.nn.functional as F

from golden_model import intops

GEN = torch.Generator().manual_seed(1234)


def spikes(*shape, p=0.3):
    return (torch.rand(*shape, generator=GEN) < p).to(torch.int8)


def int8(*shape):
    return torch.randint(-128, 128, shape, generator=GEN, dtype=torch.int8)


@pytest.mark.parametrize("p", [0.0, 0.01, 0.1, 0.5, 1.0])
def test_linear_spike_accumulate_equals_sum_of_active_weights(p):
    x = spikes(5, 7, 33, p=p)
    w = int8(12, 33)
    acc = intops.linear_int8(x, w)
    assert acc.dtype == torch.int32
    ref = torch.zeros(5, 7, 12, dtype=torch.int64)
    for i in range(33):
        ref += x[..., i:i + 1].long() * w[:, i].long()
    assert torch.equal(acc.long(), ref)


@pytest.mark.parametrize("groups,k,stride,pad", [(1, 1, 1, 0), (1, 3, 1, 1), (1, 4, 2, 1), (1, 6, 4, 1),
                                                 (6, 3, 2, 1), (6, 5, 1, 2), (2, 3, 1, 1)])
@pytest.mark.parametrize("spike_in", [True, False])
def test_conv2d_int8_equals_exact_float64_conv(groups, k, stride, pad, spike_in):
    cin, cout = 6, 6 if groups == 6 else 10
    x = spikes(3, cin, 13, 11) if spike_in else int8(3, cin, 13, 11)
    w = int8(cout, cin // groups, k, k)
    got = intops.conv2d_int8(x, w, stride, pad, groups)
    ref = F.conv2d(x.double(), w.double(), stride=stride, padding=pad, groups=groups)
    assert got.dtype == torch.int32
    assert torch.equal(got.double(), ref)


def test_conv_extreme_values_do_not_overflow():
    x = torch.full((1, 512, 3, 3), -128, dtype=torch.int8)
    w = torch.full((2, 512, 3, 3), -128, dtype=torch.int8)
    got = intops.conv2d_int8(x, w, padding=0)
    assert int(got[0, 0, 0, 0]) == 128 * 128 * 512 * 9


def requant_reference(acc, m, s, b, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    y = ((acc * m + (1 << (s - 1))) >> s) + b     # Python ints: exact, >> floors
    return min(max(y, lo), hi)


@pytest.mark.parametrize("bits", [8, 16, 32])
def test_requant_matches_python_integers(bits):
    acc = torch.cat([torch.randint(-(1 << 31), (1 << 31) - 1, (400,), generator=GEN),
                     torch.tensor([-(1 << 31), (1 << 31) - 1, 0, 1, -1])]).to(torch.int32)
    n = acc.numel()
    m = torch.randint(-(1 << 15), 1 << 15, (n,), generator=GEN)
    m[:3] = torch.tensor([-(1 << 15), (1 << 15) - 1, 0])
    s = torch.randint(1, 48, (n,), generator=GEN)
    b = torch.randint(-(1 << 31), (1 << 31) - 1, (n,), generator=GEN)
    got = intops.requant(acc, m, s, b, bits)
    ref = [requant_reference(int(a), int(mm), int(ss), int(bb), bits)
           for a, mm, ss, bb in zip(acc, m, s, b, strict=True)]
    assert got.tolist() == ref


def test_requant_rounds_half_up_and_saturates():
    acc = torch.tensor([1, 3, -1, -3, 5], dtype=torch.int32)
    one = torch.ones(5, dtype=torch.int64)
    # acc / 2: 0.5 -> 1, 1.5 -> 2, -0.5 -> 0, -1.5 -> -1 (half up), 2.5 -> 3
    assert intops.requant(acc, one, one, 0 * one, 16).tolist() == [1, 2, 0, -1, 3]
    big = torch.tensor([100000, -100000], dtype=torch.int32)
    assert intops.requant(big, one[:2], one[:2], 0 * one[:2], 16).tolist() == [32767, -32768]
    assert intops.requant(big, one[:2], one[:2], 0 * one[:2], 8).tolist() == [127, -128]


@pytest.mark.parametrize("bad", [dict(m=1 << 15), dict(s=0), dict(s=48), dict(b=1 << 31)])
def test_requant_rejects_out_of_range_params(bad):
    p = dict(m=1, s=1, b=0) | bad
    with pytest.raises(ValueError):
        intops.requant(torch.zeros(2, dtype=torch.int32), *(torch.tensor([p[k]]) for k in "msb"), 16)


def test_requant_rejects_float_accumulator():
    with pytest.raises(TypeError, match="acc"):
        intops.requant(torch.zeros(2), torch.tensor([1]), torch.tensor([1]), torch.tensor([0]), 16)


def lif_reference(xs, leak, shift, theta):
    v, out = 0, []
    for x in xs:
        v = v + (((x - v) * leak) >> shift)
        s = int(v >= theta)
        out.append(s)
        if s:
            v = 0
    return out


@pytest.mark.parametrize("leak,shift", [(1, 1), (128, 8), (1, 8), (256, 8), (77, 8), (3, 2)])
def test_lif_matches_python_reference_and_never_leaves_the_format(leak, shift):
    x = torch.randint(-(1 << 15), 1 << 15, (16, 300), generator=GEN, dtype=torch.int32)
    x[:, :4] = torch.tensor([-(1 << 15), (1 << 15) - 1, 256, 255], dtype=torch.int32)
    got = intops.lif(x, leak, shift, 256)
    assert got.dtype == torch.int8
    for j in range(x.shape[1]):
        assert got[:, j].tolist() == lif_reference(x[:, j].tolist(), leak, shift, 256)
    v = torch.zeros(300, dtype=torch.int32)
    for t in range(16):
        _, v = intops.lif_step(v, x[t], leak, shift, 256)
        assert int(v.min()) >= -(1 << 15) and int(v.max()) < 256


def test_lif_fires_at_threshold_exactly():
    # tau 2 (L=1, K=1): constant input 2*theta reaches theta after one step: v = 0 + (512 - 0) >> 1 = 256
    x = torch.full((3, 1), 512, dtype=torch.int32)
    assert intops.lif(x, 1, 1, 256).flatten().tolist() == [1, 1, 1]
    x = torch.full((3, 1), 510, dtype=torch.int32)   # v: 255, 382 -> fires on step 2, then 255 again
    assert intops.lif(x, 1, 1, 256).flatten().tolist() == [0, 1, 0]


@pytest.mark.parametrize("kw", [dict(leak=0, shift=8, theta=1), dict(leak=257, shift=8, theta=1),
                                dict(leak=1, shift=0, theta=1), dict(leak=1, shift=1, theta=0),
                                dict(leak=1, shift=1, theta=1 << 15)])
def test_lif_rejects_bad_params(kw):
    with pytest.raises(ValueError):
        intops.lif(torch.zeros(2, 3, dtype=torch.int32), **kw)


def test_lif_rejects_out_of_format_input():
    with pytest.raises(ValueError, match="16-bit"):
        intops.lif(torch.full((2, 1), 1 << 15, dtype=torch.int32), 1, 1, 256)


@pytest.mark.parametrize("p", [0.0, 0.01, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("mode", ["dot", "hamming"])
def test_attention_equals_explicit_formula(p, mode):
    q, k, v = spikes(2, 3, 50, 16, p=p), spikes(2, 3, 50, 16, p=p), spikes(2, 3, 50, 16, p=p)
    got = intops.attention(q, k, v, mode)
    qd, kd, vd = q.double(), k.double(), v.double()
    if mode == "dot":
        ref = qd @ (kd.transpose(-2, -1) @ vd)
    else:
        ref = (2 * qd - 1) @ ((2 * kd - 1).transpose(-2, -1) @ vd)
    assert got.dtype == torch.int32
    assert torch.equal(got.double(), ref)


def test_attention_counts_bounds():
    n, d = 40, 8
    ones = torch.ones(n, d, dtype=torch.int8)
    kv, s_v = intops.attention_kv(ones, ones)
    assert int(kv.max()) == n and int(s_v.max()) == n
    assert int(intops.attention_readout(ones, kv, s_v, "dot").max()) == d * n
    zeros = torch.zeros(n, d, dtype=torch.int8)
    assert int(intops.attention(zeros, ones, ones, "hamming").min()) == -d * n


def test_spike_checks():
    with pytest.raises(ValueError, match="spikes"):
        intops.attention(torch.full((2, 2), 2, dtype=torch.int8), spikes(2, 2), spikes(2, 2), "dot")
    with pytest.raises(TypeError, match="int8"):
        intops.attention_kv(spikes(2, 2).float(), spikes(2, 2))
    with pytest.raises(ValueError, match="mode"):
        intops.attention(spikes(2, 2), spikes(2, 2), spikes(2, 2), "softmax")
    with pytest.raises(ValueError, match="input channels"):
        intops.linear_int8(spikes(2, 5), int8(3, 4))
    with pytest.raises(TypeError, match="weight"):
        intops.conv2d_int8(spikes(1, 2, 4, 4), torch.zeros(2, 2, 3, 3))


def test_shortcut_saturates():
    x = torch.tensor([32000, -32000, 5], dtype=torch.int32)
    y = torch.tensor([1000, -1000, -7], dtype=torch.int32)
    assert intops.shortcut(x, y).tolist() == [32767, -32768, -2]


def test_linear_int8_fan_in_one():
    """C_in = 1 (torch._int_mm is wrong on CPU for an inner dimension of 1): still the exact sum."""
    x = torch.randint(-128, 128, (17, 1), dtype=torch.int8)
    w = torch.randint(-128, 128, (24, 1), dtype=torch.int8)
    assert torch.equal(intops.linear_int8(x, w), (x.long() @ w.long().t()).int())
