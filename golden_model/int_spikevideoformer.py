"""Bit-accurate integer SpikeVideoFormer (``bit_accurate``) and its quantizer.

Mirrors :class:`golden_model.spikevideoformer.SpikeVideoFormer`; layer names are the float
module names. Data path (all integer, residual stream ``Q.F`` int16, LIF tau 2 = ``L 1, K 1``):

* stem: int8 clip -> 7x7/2 conv -> requant (bias, BN folded) -> ``Q.F``;
* downsampling: LIF -> 3x3 conv on spikes -> requant -> ``Q.F``;
* MS_ConvBlock: ``x += pw2(int8 <- dw7x7(LIF(BN pw1(LIF x))))``; ``x += BN conv3x3(LIF(BN conv3x3(LIF x)))``
  (the depthwise 7x7 sees spikes and requantises to int8 for the real-valued ``pw2``);
* MS_Block attention: LIF -> q/k/v RepConv+BN fused into one 3x3 conv on spikes -> requant -> LIF
  -> joint space-time counts over all ``T*H*W`` tokens per head (Hamming or dot; ``dot2d``: per
  frame) -> requant (``1/(2C)`` and ``attn_bn`` folded, or ``0.125``) -> LIF -> fused proj conv;
* MS_MLP: LIF -> 1x1 -> requant -> LIF -> 1x1 -> requant, shortcut;
* head: spatial sum of the residual stream -> requant (``1/(H*W)``) -> LIF -> linear on spikes
  -> requant (``1/T`` folded) to int32 logits per step -> sum over T.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import intops
from .intlayers import NULL_TRACER, IntAttention, IntConv, IntEmbed, IntLIF, IntLinear, IntModelBase, Requant, Tracer
from .quant import LayerFolder, bn_affine, calibrate, int8_scale, make_requant, residual_frac_bits
from .spikevideoformer import MS_Attention, MS_Block, MS_ConvBlock, SpikeVideoFormer


@dataclass
class IntSepConv:
    lif1: IntLIF
    pwconv1: IntConv   # spikes -> Q.F (bn1)
    lif2: IntLIF
    dwconv: IntConv    # depthwise 7x7 on spikes -> int8
    pwconv2: IntConv   # int8 -> Q.F (bn2)

    def __call__(self, x: torch.Tensor, tr: Tracer) -> torch.Tensor:
        y = self.pwconv1(self.lif1(x, tr), tr)
        return self.pwconv2(self.dwconv(self.lif2(y, tr), tr), tr)


@dataclass
class IntMSConvBlock:
    sep: IntSepConv
    lif1: IntLIF
    conv1: IntConv
    lif2: IntLIF
    conv2: IntConv
    bits: int

    def __call__(self, x: torch.Tensor, tr: Tracer) -> torch.Tensor:
        x = intops.shortcut(x, self.sep(x, tr), self.bits)
        y = self.conv2(self.lif2(self.conv1(self.lif1(x, tr), tr), tr), tr)
        return intops.shortcut(x, y, self.bits)


@dataclass
class IntMSAttention:
    head_lif: IntLIF
    q_conv: IntConv
    k_conv: IntConv
    v_conv: IntConv
    q_lif: IntLIF
    k_lif: IntLIF
    v_lif: IntLIF
    attn: IntAttention
    attn_lif: IntLIF
    proj_conv: IntConv

    @staticmethod
    def tokens(x: torch.Tensor) -> torch.Tensor:
        """``(T, B, C, H, W)`` -> ``(T, B, H*W, C)``."""
        return x.flatten(3).transpose(2, 3).contiguous()

    def qkv_spikes(self, x: torch.Tensor, tr: Tracer = NULL_TRACER):
        """q, k, v spikes as tokens ``(T, B, H*W, C)`` from the residual stream."""
        s = self.head_lif(x, tr)
        return tuple(self.tokens(lif(conv(s, tr), tr)) for conv, lif in
                     ((self.q_conv, self.q_lif), (self.k_conv, self.k_lif), (self.v_conv, self.v_lif)))

    def __call__(self, x: torch.Tensor, tr: Tracer) -> torch.Tensor:
        q, k, v = self.qkv_spikes(x, tr)
        o = self.attn(q, k, v, tr).transpose(2, 3).reshape(x.shape).contiguous()
        return self.proj_conv(self.attn_lif(o, tr), tr)


@dataclass
class IntMSMLP:
    fc1_lif: IntLIF
    fc1: IntConv
    fc2_lif: IntLIF
    fc2: IntConv

    def __call__(self, x: torch.Tensor, tr: Tracer) -> torch.Tensor:
        return self.fc2(self.fc2_lif(self.fc1(self.fc1_lif(x, tr), tr), tr), tr)


@dataclass
class IntMSBlock:
    attn: IntMSAttention
    mlp: IntMSMLP
    bits: int

    def __call__(self, x: torch.Tensor, tr: Tracer) -> torch.Tensor:
        x = intops.shortcut(x, self.attn(x, tr), self.bits)
        return intops.shortcut(x, self.mlp(x, tr), self.bits)


@dataclass
class IntSpikeVideoFormer(IntModelBase):
    """Integer SpikeVideoFormer. ``forward(int8 clip (B, 3, T, H, W)) -> int32 logits (B, classes)``."""

    stages: list = field(default_factory=list)   # [(name, block)] in execution order
    pool_rq: Requant = None                      # spatial sum -> Q.F mean
    lif: IntLIF = None
    head: IntLinear = None                       # spikes -> int32 logits per step (1/T folded)

    def forward(self, clip: torch.Tensor, tracer: Tracer = NULL_TRACER) -> torch.Tensor:
        self.check_int_clip(clip)
        tr = tracer
        tr.record("input", "clip", clip)
        x = clip.permute(2, 0, 1, 3, 4).contiguous()
        for _, blk in self.stages:
            x = blk(x, tr)
        pooled = x.sum(dim=(3, 4), dtype=torch.int32)          # (T, B, C4); |sum| < 2**15 * H*W
        m = self.pool_rq.traced("pool", pooled.unsqueeze(2), "tokens", tr).squeeze(2)
        logits_t = self.head(self.lif(m, tr).unsqueeze(2), tr).squeeze(2)   # (T, B, classes)
        return logits_t.sum(dim=0, dtype=torch.int64).clamp(-(1 << 31), (1 << 31) - 1).to(torch.int32)

    __call__ = forward


def _residual_points(model: SpikeVideoFormer) -> list[str]:
    names = ["downsample1_1", "downsample1_2", "downsample2", "downsample3", "downsample4"]
    for stage in ("ConvBlock1_1", "ConvBlock1_2", "ConvBlock2_1", "ConvBlock2_2", "block3", "block4"):
        names += [f"{stage}.{i}" for i in range(len(getattr(model, stage)))]
    return names


def _int8_points(model: SpikeVideoFormer) -> list[str]:
    return [f"{stage}.{i}.Conv.dwconv" for stage in ("ConvBlock1_1", "ConvBlock1_2", "ConvBlock2_1", "ConvBlock2_2")
            for i in range(len(getattr(model, stage)))]


def quantize_spikevideoformer(model: SpikeVideoFormer, calib_clips: list[torch.Tensor], res_bits: int = 16,
                              logit_frac_bits: int = 16) -> IntSpikeVideoFormer:
    """Map a trained float SpikeVideoFormer to the integer model, calibrating on ``calib_clips``."""
    if not calib_clips:
        raise ValueError("quantisation needs at least one calibration clip")
    cfg = model.cfg
    stats = calibrate(model, calib_clips, _residual_points(model) + _int8_points(model))
    in_scale = int8_scale(max(float(c.abs().max()) for c in calib_clips))
    f = residual_frac_bits(max(stats[n] for n in _residual_points(model)), res_bits)
    fo = LayerFolder(f, res_bits)

    def down(m, name, first=False) -> IntEmbed:
        if first:
            return IntEmbed(fo.conv(m.encode_conv, m.encode_bn, f"{name}.encode_conv", in_scale=in_scale,
                                    spike_input=False))
        return IntEmbed(fo.conv(m.encode_conv, m.encode_bn, f"{name}.encode_conv"),
                        fo.lif(m.encode_lif, f"{name}.encode_lif"))

    def convblock(blk: MS_ConvBlock, name: str) -> IntMSConvBlock:
        sc = blk.Conv
        s_dw = int8_scale(stats[f"{name}.Conv.dwconv"])
        sep = IntSepConv(
            fo.lif(sc.lif1, f"{name}.Conv.lif1"), fo.conv(sc.pwconv1, sc.bn1, f"{name}.Conv.pwconv1"),
            fo.lif(sc.lif2, f"{name}.Conv.lif2"),
            fo.conv(sc.dwconv, None, f"{name}.Conv.dwconv", out_scale=s_dw, out_bits=8),
            fo.conv(sc.pwconv2, sc.bn2, f"{name}.Conv.pwconv2", in_scale=s_dw, spike_input=False))
        return IntMSConvBlock(sep, fo.lif(blk.lif1, f"{name}.lif1"), fo.conv(blk.conv1, blk.bn1, f"{name}.conv1"),
                              fo.lif(blk.lif2, f"{name}.lif2"), fo.conv(blk.conv2, blk.bn2, f"{name}.conv2"),
                              res_bits)

    def repconv(seq, name) -> IntConv:
        w, b = seq.fused_conv3x3()
        return fo.conv_from(w, b, None, name, padding=1)

    def attention(a: MS_Attention, name: str) -> IntMSAttention:
        c = a.dim
        if a.mode == "hamming":
            g, h = (t.detach().double() for t in bn_affine(a.attn_bn))
            rq = make_requant(g / (2 * c), h, fo.res_scale, res_bits, f"{name}.attn")
        else:
            rq = make_requant(torch.full((c,), a.scale), torch.zeros(1), fo.res_scale, res_bits, f"{name}.attn")
        mode, window = ("hamming", "clip") if a.mode == "hamming" else ("dot", "frame" if a.mode == "dot2d" else "clip")
        return IntMSAttention(
            fo.lif(a.head_lif, f"{name}.head_lif"),
            repconv(a.q_conv, f"{name}.q_conv"), repconv(a.k_conv, f"{name}.k_conv"),
            repconv(a.v_conv, f"{name}.v_conv"),
            fo.lif(a.q_lif, f"{name}.q_lif"), fo.lif(a.k_lif, f"{name}.k_lif"), fo.lif(a.v_lif, f"{name}.v_lif"),
            IntAttention(f"{name}.attn", a.num_heads, mode, window, rq),
            fo.lif(a.attn_lif, f"{name}.attn_lif"), repconv(a.proj_conv, f"{name}.proj_conv"))

    def block(blk: MS_Block, name: str) -> IntMSBlock:
        m = blk.mlp
        mlp = IntMSMLP(fo.lif(m.fc1_lif, f"{name}.mlp.fc1_lif"),
                       fo.conv_from(m.fc1_conv.weight, m.fc1_conv.bias, m.fc1_bn, f"{name}.mlp.fc1_conv"),
                       fo.lif(m.fc2_lif, f"{name}.mlp.fc2_lif"),
                       fo.conv_from(m.fc2_conv.weight, m.fc2_conv.bias, m.fc2_bn, f"{name}.mlp.fc2_conv"))
        return IntMSBlock(attention(blk.attn, f"{name}.attn"), mlp, res_bits)

    stages = [("downsample1_1", down(model.downsample1_1, "downsample1_1", first=True))]
    for name in ("ConvBlock1_1", "downsample1_2", "ConvBlock1_2", "downsample2", "ConvBlock2_1", "ConvBlock2_2",
                 "downsample3", "block3", "downsample4", "block4"):
        mod = getattr(model, name)
        if name.startswith("downsample"):
            stages.append((name, down(mod, name)))
        elif name.startswith("ConvBlock"):
            stages += [(f"{name}.{i}", convblock(b, f"{name}.{i}")) for i, b in enumerate(mod)]
        else:
            stages += [(f"{name}.{i}", block(b, f"{name}.{i}")) for i, b in enumerate(mod)]
    hw = (cfg.img_size // 16) ** 2
    c4 = cfg.embed_dim[3]
    pool_rq = make_requant(torch.full((c4,), 1.0 / hw), torch.zeros(1), 1.0, res_bits, "pool")
    head = fo.linear(model.head, None, "head", out_scale=2.0 ** -logit_frac_bits * cfg.frames, out_bits=32)
    return IntSpikeVideoFormer(
        name="spikevideoformer", frames=cfg.frames, img_size=cfg.img_size, in_chans=cfg.in_chans,
        in_scale=in_scale, frac_bits=f, res_bits=res_bits, logit_frac_bits=logit_frac_bits,
        meta={"config": cfg.to_dict(), "calibration": stats, "calibration_clips": len(calib_clips)},
        stages=stages, pool_rq=pool_rq, lif=fo.lif(model.lif, "lif"), head=head)
