"""Float SpikeVideoFormer (``floating_pt``), trainable with surrogate gradients.

The backbone is Meta-SpikeFormer (``metaspikformer_8_512``) with SpikeVideoFormer's joint
space-time spike-driven attention (``MS_Attention_3D_RepConv`` in upstream
``JimmyZou/SpikeVideoFormer``, ``classification/models/metaspikformer.py``). Module and parameter
names equal upstream's, so an upstream checkpoint loads by name (drop upstream's optional
``head_kd.*`` entries; LIF neurons have no parameters on either side).

Data layout: the clip is ``(B, 3, T, H, W)`` float; frames are time steps, so inside the network
tensors are multi-step ``(T, B, C, H, W)``. BatchNorm is plain ``nn.BatchNorm1d/2d`` shared over
time (T folded into the batch), unlike SVFormer's per-step BN.

Network (full size, 224x224, widths ``embed_dim = (128, 256, 512, 640)``)::

    downsample1_1  conv7x7 s2 3->64 + BN (sees pixels: no LIF)            112x112
    ConvBlock1_1   MS_ConvBlock(64)
    downsample1_2  LIF -> conv3x3 s2 -> BN   64->128                       56x56
    ConvBlock1_2   MS_ConvBlock(128)
    downsample2    128->256                                                28x28
    ConvBlock2_1, ConvBlock2_2   MS_ConvBlock(256)
    downsample3    256->512                                                14x14
    block3         6 x MS_Block(512, 8 heads)
    downsample4    512->640, stride 1                                      14x14
    block4         2 x MS_Block(640, 8 heads)
    head           spatial mean -> LIF -> Linear(640, classes) -> mean over T

Neurons: :class:`golden_model.neurons.LIF` with tau 2, hard reset to 0, detached reset and
SpikingJelly's default ``Sigmoid(alpha=4)`` surrogate (upstream ``MultiStepLIFNode``). Every
branch starts with a LIF and adds onto the real-valued residual stream (membrane shortcut).

Attention modes (config field ``attention``; upstream ``att_mode`` in brackets):

* ``"hamming"`` (``3D_ham``, the default): spike-driven Hamming attention over all ``T*H*W``
  tokens of the clip jointly, ``(2Q-1) @ ((2K-1)^T @ V) / (2C)`` -> ``attn_bn`` -> LIF (V_th 1).
* ``"dot"`` (``3D_dot``): joint space-time ``Q @ (K^T @ V) * 0.125`` -> LIF (V_th 0.5).
* ``"dot2d"`` (``2D``, ``MS_Attention_RepConv``): the same dot product within each frame.

In all modes ``K^T V`` is a ``head_dim x head_dim`` matrix summed over tokens, so the cost is
linear in the number of tokens (and in T for the joint modes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import bn_scale_shift, check_clip, steps_apply
from .neurons import LIF
from .svformer import DropPath

ATTENTION_MODES = ("hamming", "dot", "dot2d")
UPSTREAM_ATT_MODE = {"hamming": "3D_ham", "dot": "3D_dot", "dot2d": "2D"}


def _lif(v_threshold: float = 1.0) -> LIF:
    """Upstream's ``MultiStepLIFNode(tau=2.0, detach_reset=True)``."""
    return LIF(tau=2.0, v_threshold=v_threshold, surrogate="sigmoid")


@dataclass(frozen=True)
class SpikeVideoFormerConfig:
    """Hyper-parameters. ``full()`` is ``metaspikformer_8_512``; ``tiny()`` trains on a CPU.

    Args:
        num_classes: classifier outputs.
        img_size: square input side; a multiple of 16 (four stride-2 stages).
        frames: T, frames per clip = time steps. ``full()`` uses 16: the upstream classification
            code runs images with T=1 and we could not confirm the video T from it; 16 is the
            common clip length (and SVFormer's), so treat it as an assumption.
        in_chans: input channels.
        embed_dim: widths of stage 1 (the stem and ``ConvBlock1_1`` use ``embed_dim[0] // 2``),
            stage 2, stage 3 (``block3``) and stage 4 (``block4``).
        num_heads: attention heads in stages 3 and 4.
        mlp_ratio: expansion of the MS_ConvBlock 3x3 convs and of the MS_MLP.
        depths: number of MS_Blocks in ``block3`` and ``block4`` (upstream hard-codes 6, 2).
        attention: ``"hamming"``, ``"dot"`` or ``"dot2d"`` (see the module docstring).
        drop_path: maximum stochastic-depth rate, linear over the MS_Blocks (upstream builds
            DropPath but never applies it; the default 0 equals upstream).
    """

    num_classes: int = 1000
    img_size: int = 224
    frames: int = 16
    in_chans: int = 3
    embed_dim: tuple[int, int, int, int] = (128, 256, 512, 640)
    num_heads: int = 8
    mlp_ratio: int = 4
    depths: tuple[int, int] = (6, 2)
    attention: str = "hamming"
    drop_path: float = 0.0

    def __post_init__(self) -> None:
        if self.img_size < 16 or self.img_size % 16:
            raise ValueError(f"img_size must be a positive multiple of 16, got {self.img_size}")
        if self.frames < 1 or self.num_classes < 1 or self.in_chans < 1:
            raise ValueError("frames, num_classes and in_chans must be positive")
        if len(self.embed_dim) != 4 or self.embed_dim[0] % 2:
            raise ValueError(f"embed_dim must be 4 widths, the first even; got {self.embed_dim}")
        for d in self.embed_dim[2:]:
            if d % self.num_heads:
                raise ValueError(f"embed dim {d} is not a multiple of num_heads {self.num_heads}")
        if len(self.depths) != 2 or min(self.depths) < 0:
            raise ValueError(f"depths must be two non-negative counts, got {self.depths}")
        if int(self.mlp_ratio) != self.mlp_ratio or self.mlp_ratio < 1:
            raise ValueError(f"mlp_ratio must be a positive integer, got {self.mlp_ratio}")
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {self.attention!r}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")

    @classmethod
    def full(cls, num_classes: int = 1000) -> SpikeVideoFormerConfig:
        """``metaspikformer_8_512`` (55 M parameters with 1000 classes), 16 x 224 x 224 clips."""
        return cls(num_classes=num_classes)

    @classmethod
    def tiny(cls, num_classes: int = 10) -> SpikeVideoFormerConfig:
        """4 x 64 x 64 clips; the joint attention window is 4*4*4 = 64 tokens."""
        return cls(num_classes=num_classes, img_size=64, frames=4, embed_dim=(16, 32, 64, 80),
                   num_heads=4, depths=(1, 1))

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# RepConv and its re-parameterisation into one 3x3 convolution


class BNAndPadLayer(nn.Module):
    """BatchNorm2d, then a border of ``pad_pixels`` filled with the BN's inference image of 0.

    The pad value is ``bias - running_mean * weight / sqrt(running_var + eps)`` per channel,
    computed from the *running* statistics (and detached affine terms) even in training mode, as
    upstream does; so in eval mode the layer equals ``BN(zero_pad(x))``. The BN is the child
    ``bn`` (parameters ``*.bn.weight`` etc., as upstream).
    """

    def __init__(self, pad_pixels: int, num_features: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features)
        self.pad_pixels = pad_pixels

    def pad_value(self) -> Tensor:
        """Per-channel border value ``(C,)``: the running-statistics BN output for input 0."""
        bn = self.bn  # upstream's expression and operation order (bitwise equal borders)
        return bn.bias.detach() - bn.running_mean * bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(x)
        p = self.pad_pixels
        if p == 0:
            return y
        n, c, h, w = y.shape
        out = self.pad_value().to(y.dtype).view(1, c, 1, 1).expand(n, c, h + 2 * p, w + 2 * p).clone()
        out[:, :, p:p + h, p:p + w] = y
        return out


class RepConv(nn.Module):
    """Re-parameterisable 3x3 conv: ``conv1x1 -> BN+pad(1) -> dw3x3 (pad 0) -> pw1x1 -> BN``.

    ``body.0`` 1x1 C_in->C_in, ``body.1`` :class:`BNAndPadLayer`, ``body.2.0`` depthwise 3x3,
    ``body.2.1`` 1x1 C_in->C_out, ``body.2.2`` BatchNorm2d. No conv has a bias. Spatial size is
    preserved. Input/output ``(N, C, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 1, bias=False),
            BNAndPadLayer(1, in_channels),
            nn.Sequential(
                nn.Conv2d(in_channels, in_channels, 3, groups=in_channels, bias=False),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            ),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)

    def fused_conv3x3(self) -> tuple[Tensor, Tensor]:
        """Weight ``(C_out, C_in, 3, 3)`` and bias ``(C_out,)`` of the equivalent 3x3 conv.

        Valid in eval mode (running statistics). With ``W1`` the 1x1 conv, ``(s1, t1)`` the
        padded BN's inference scale/shift (t1 is also the pad value), ``D`` the depthwise kernel,
        ``P`` the pointwise conv and ``(s2, t2)`` the last BN::

            body(x) = s2 * P(s1 * D(zero_pad(W1 x)) + t1 * sum(D)) + t2
                    = conv3x3(x, weight, padding=1) + bias
            weight[o, i, u, v] = s2[o] * sum_c P[o, c] s1[c] D[c, u, v] W1[c, i]
            bias[o]            = s2[o] * sum_c P[o, c] t1[c] sum_uv D[c, u, v] + t2[o]

        because the BN's pad value equals BN(0), so padding after the BN equals the BN of a
        zero-padded input, and a 1x1 conv commutes with zero padding.
        """
        conv1, bnpad, (dw, pw, bn2) = self.body
        s1, t1 = bn_scale_shift(bnpad.bn)
        s2, t2 = bn_scale_shift(bn2)
        w1 = conv1.weight[:, :, 0, 0]  # (C_in, C_in): [c, i]
        d = dw.weight[:, 0]  # (C_in, 3, 3)
        p = pw.weight[:, :, 0, 0]  # (C_out, C_in): [o, c]
        weight = torch.einsum("o,oc,c,cuv,ci->oiuv", s2, p, s1, d, w1)
        bias = s2 * (p @ (t1 * d.sum(dim=(1, 2)))) + t2
        return weight.detach(), bias.detach()


class RepConvBN(nn.Sequential):
    """``Sequential(RepConv, BatchNorm2d)``: upstream's ``q_conv`` / ``k_conv`` / ``v_conv`` /
    ``proj_conv`` (children ``0`` and ``1``, so names stay ``q_conv.0.body.*``, ``q_conv.1.*``).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(RepConv(in_channels, out_channels), nn.BatchNorm2d(out_channels))

    def fused_conv3x3(self) -> tuple[Tensor, Tensor]:
        """Weight ``(C_out, C_in, 3, 3)`` and bias ``(C_out,)`` such that, in eval mode,
        ``self(x) == F.conv2d(x, weight, bias, padding=1)`` (zero padding), up to float rounding.

        The outer BN's scale/shift are folded into :meth:`RepConv.fused_conv3x3`.
        """
        w, b = self[0].fused_conv3x3()
        s, t = bn_scale_shift(self[1])
        return (w * s.view(-1, 1, 1, 1)).detach(), (b * s + t).detach()


def fused_conv_forward(seq: RepConvBN, x: Tensor) -> Tensor:
    """``seq(x)`` computed through the fused 3x3 conv (eval-mode semantics), ``x`` ``(N, C, H, W)``."""
    w, b = seq.fused_conv3x3()
    return F.conv2d(x, w, b, padding=1)


# ----------------------------------------------------------------------------------------------
# Blocks


class MS_DownSampling(nn.Module):  # noqa: N801 (upstream name)
    """``[LIF ->] conv kxk (bias) -> BN`` on ``(T, B, C, H, W)``; the first layer sees pixels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 padding: int, first_layer: bool):
        super().__init__()
        self.encode_conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                     padding=padding)
        self.encode_bn = nn.BatchNorm2d(out_channels)
        if not first_layer:
            self.encode_lif = _lif()

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "encode_lif"):
            x = self.encode_lif(x)
        return steps_apply(lambda y: self.encode_bn(self.encode_conv(y)), x)


class SepConv(nn.Module):
    """Inverted separable conv: ``LIF -> pw1x1 (C->2C) -> BN -> LIF -> dw7x7 -> pw1x1 (2C->C) -> BN``.

    The depthwise 7x7 sees spikes; the second 1x1 sees its real-valued output. No conv biases.
    """

    def __init__(self, dim: int, expansion: int = 2, kernel_size: int = 7):
        super().__init__()
        med = expansion * dim
        self.lif1 = _lif()
        self.pwconv1 = nn.Conv2d(dim, med, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(med)
        self.lif2 = _lif()
        self.dwconv = nn.Conv2d(med, med, kernel_size, padding=kernel_size // 2, groups=med, bias=False)
        self.pwconv2 = nn.Conv2d(med, dim, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = steps_apply(lambda y: self.bn1(self.pwconv1(y)), self.lif1(x))
        return steps_apply(lambda y: self.bn2(self.pwconv2(self.dwconv(y))), self.lif2(x))


class MS_ConvBlock(nn.Module):  # noqa: N801 (upstream name)
    """``x += SepConv(x)``; ``x += BN(conv3x3(LIF(BN(conv3x3(LIF(x))))))`` (C -> rC -> C, no bias)."""

    def __init__(self, dim: int, mlp_ratio: int = 4):
        super().__init__()
        hidden = dim * mlp_ratio
        self.Conv = SepConv(dim)
        self.lif1 = _lif()
        self.conv1 = nn.Conv2d(dim, hidden, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.lif2 = _lif()
        self.conv2 = nn.Conv2d(hidden, dim, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.Conv(x)
        y = steps_apply(lambda z: self.bn1(self.conv1(z)), self.lif1(x))
        y = steps_apply(lambda z: self.bn2(self.conv2(z)), self.lif2(y))
        return x + y


class MS_MLP(nn.Module):  # noqa: N801 (upstream name)
    """Token MLP ``LIF -> Conv1d k1 (bias) -> BN1d -> LIF -> Conv1d k1 (bias) -> BN1d``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1_lif = _lif()
        self.fc1_conv = nn.Conv1d(dim, hidden, 1)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc2_lif = _lif()
        self.fc2_conv = nn.Conv1d(hidden, dim, 1)
        self.fc2_bn = nn.BatchNorm1d(dim)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x = x.flatten(3)  # (T, B, C, N)
        x = steps_apply(lambda y: self.fc1_bn(self.fc1_conv(y)), self.fc1_lif(x))
        x = steps_apply(lambda y: self.fc2_bn(self.fc2_conv(y)), self.fc2_lif(x))
        return x.reshape(shape)


class MS_Attention(nn.Module):  # noqa: N801
    """Spike-driven linear attention on ``(T, B, C, H, W)`` (upstream ``MS_Attention_3D_RepConv``,
    or ``MS_Attention_RepConv`` for ``mode="dot2d"``).

    ``head_lif -> q/k/v = RepConvBN -> LIF`` (:meth:`qkv_spikes`), attention over the token
    window (:meth:`attend`), then ``[attn_bn ->] attn_lif -> proj_conv`` (RepConvBN).

    Channels split into heads as ``c = head * head_dim + j``. The token window is the whole clip
    (``T*H*W`` tokens, order t, h, w) for ``"hamming"`` and ``"dot"``, one frame (``H*W``) for
    ``"dot2d"``. The attention output per head is::

        hamming:      (2Q - 1) @ ((2K - 1)^T @ V) / (2 * C)     C = all channels, as upstream
        dot, dot2d:   Q @ (K^T @ V) * 0.125

    ``attn_bn`` (BatchNorm2d) exists only in ``"hamming"`` mode; ``attn_lif`` fires at 1.0 there
    and at 0.5 in the dot modes.
    """

    def __init__(self, dim: int, num_heads: int, mode: str = "hamming"):
        super().__init__()
        if mode not in ATTENTION_MODES:
            raise ValueError(f"mode must be one of {ATTENTION_MODES}, got {mode!r}")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not a multiple of num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.mode = mode
        self.scale = 0.125
        self.head_lif = _lif()
        self.q_conv = RepConvBN(dim, dim)
        self.k_conv = RepConvBN(dim, dim)
        self.v_conv = RepConvBN(dim, dim)
        self.q_lif = _lif()
        self.k_lif = _lif()
        self.v_lif = _lif()
        if mode == "hamming":
            self.attn_bn = nn.BatchNorm2d(dim)
        self.attn_lif = _lif(1.0 if mode == "hamming" else 0.5)
        self.proj_conv = RepConvBN(dim, dim)

    def split_heads(self, x: Tensor) -> Tensor:
        """``(T, B, C, H, W)`` -> ``(T, B, heads, H*W, head_dim)``."""
        t, b = x.shape[:2]
        return x.reshape(t, b, self.num_heads, self.head_dim, -1).transpose(-1, -2)

    def qkv_spikes(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v spikes, each ``(T, B, heads, H*W, head_dim)``, from the residual stream
        ``(T, B, C, H, W)``; the token within a frame is ``h * W + w``."""
        s = self.head_lif(x)
        q = self.q_lif(steps_apply(self.q_conv, s))
        k = self.k_lif(steps_apply(self.k_conv, s))
        v = self.v_lif(steps_apply(self.v_conv, s))
        return self.split_heads(q), self.split_heads(k), self.split_heads(v)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention output ``(T, B, heads, H*W, head_dim)`` (before BN/LIF) from the spikes of
        :meth:`qkv_spikes`. ``kv`` sums over the time axis too, except in ``"dot2d"`` mode."""
        if self.mode == "dot2d":
            return (q @ (k.transpose(-2, -1) @ v)) * self.scale
        if self.mode == "dot":
            kv = torch.einsum("tbhnd,tbhne->bhde", k, v)
            return torch.einsum("tbhnd,bhde->tbhne", q, kv) * self.scale
        kv = torch.einsum("tbhnd,tbhne->bhde", 2 * k - 1, v)
        return torch.einsum("tbhnd,bhde->tbhne", 2 * q - 1, kv) / (2 * self.dim)

    def forward(self, x: Tensor) -> Tensor:
        o = self.attend(*self.qkv_spikes(x))
        o = o.transpose(-1, -2).reshape(x.shape)  # (T, B, C, H, W)
        if self.mode == "hamming":
            o = steps_apply(self.attn_bn, o)
        return steps_apply(self.proj_conv, self.attn_lif(o))


class MS_Block(nn.Module):  # noqa: N801 (upstream name)
    """``x += attn(x)``; ``x += mlp(x)`` on ``(T, B, C, H, W)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, mode: str, drop_path: float = 0.0):
        super().__init__()
        self.attn = MS_Attention(dim, num_heads, mode)
        self.drop_path = DropPath(drop_path)
        self.mlp = MS_MLP(dim, dim * mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.mlp(x))


# ----------------------------------------------------------------------------------------------
# The network


class SpikeVideoFormer(nn.Module):
    """SpikeVideoFormer: clip ``(B, in_chans, T, H, W)`` float -> logits ``(B, num_classes)``."""

    def __init__(self, cfg: SpikeVideoFormerConfig):
        super().__init__()
        self.cfg = cfg
        e, r = cfg.embed_dim, int(cfg.mlp_ratio)
        c0 = e[0] // 2
        n = sum(cfg.depths)
        dpr = [cfg.drop_path * i / max(n - 1, 1) for i in range(n)]  # linear 0 .. drop_path

        def down(c_in: int, c_out: int, stride: int = 2) -> MS_DownSampling:
            return MS_DownSampling(c_in, c_out, 3, stride, 1, first_layer=False)

        def blocks(dim: int, n: int) -> nn.ModuleList:
            return nn.ModuleList(MS_Block(dim, cfg.num_heads, r, cfg.attention, dpr.pop(0)) for _ in range(n))

        self.downsample1_1 = MS_DownSampling(cfg.in_chans, c0, 7, 2, 3, first_layer=True)
        self.ConvBlock1_1 = nn.ModuleList([MS_ConvBlock(c0, r)])
        self.downsample1_2 = down(c0, e[0])
        self.ConvBlock1_2 = nn.ModuleList([MS_ConvBlock(e[0], r)])
        self.downsample2 = down(e[0], e[1])
        self.ConvBlock2_1 = nn.ModuleList([MS_ConvBlock(e[1], r)])
        self.ConvBlock2_2 = nn.ModuleList([MS_ConvBlock(e[1], r)])
        self.downsample3 = down(e[1], e[2])
        self.block3 = blocks(e[2], cfg.depths[0])
        self.downsample4 = down(e[2], e[3], stride=1)
        self.block4 = blocks(e[3], cfg.depths[1])
        self.lif = _lif()
        self.head = nn.Linear(e[3], cfg.num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def check_clip(self, x: Tensor) -> None:
        """Raise unless ``x`` is a float ``(B, in_chans, frames, img, img)`` clip."""
        c = self.cfg
        check_clip(x, c.in_chans, c.frames, c.img_size)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(T, B, in_chans, H, W)`` -> stage-4 residual stream ``(T, B, C4, H/16, W/16)``."""
        x = self.downsample1_1(x)
        for blk in self.ConvBlock1_1:
            x = blk(x)
        x = self.downsample1_2(x)
        for blk in self.ConvBlock1_2:
            x = blk(x)
        x = self.downsample2(x)
        for blk in (*self.ConvBlock2_1, *self.ConvBlock2_2):
            x = blk(x)
        x = self.downsample3(x)
        for blk in self.block3:
            x = blk(x)
        x = self.downsample4(x)
        for blk in self.block4:
            x = blk(x)
        return x

    def forward(self, clip: Tensor) -> Tensor:
        self.check_clip(clip)
        x = self.forward_features(clip.permute(2, 0, 1, 3, 4))
        x = self.lif(x.flatten(3).mean(3))  # (T, B, C4) spikes
        return self.head(x).mean(0)
