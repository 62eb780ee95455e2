"""Bit-accurate integer SVFormer (``bit_accurate``) and its quantizer.

The integer model mirrors :class:`golden_model.svformer.SVFormer` block by block; every layer
carries its float module's name. Data path (all integer):

* input: int8 clip (host quantisation :meth:`IntModelBase.quantize_clip`);
* stem: int8 x int8 conv -> requant (conv bias and per-step BN folded) -> residual ``Q.F`` int16;
* each branch: LIF -> spike accumulate (1x1 conv / linear / kxk conv) -> requant -> ``Q.F``
  -> membrane shortcut ``sat16(x + y)``;
* CBlock's real-valued path: spikes -> 1x1 -> requant to int8 -> depthwise 5x5 int8 x int8 ->
  requant to int8 -> 1x1 int8 x int8 -> requant (BN folded) -> ``Q.F``;
* attention: q/k/v LIF spikes -> counts ``Q (K^T V)`` per frame and head (dot mode) -> requant
  (``head_dim**-0.5``) -> proj LIF -> spike linear -> requant (BN folded) -> shortcut;
* local path: LIF -> depthwise 3x3/2 on spikes -> requant int8 -> 1x1 int8 -> requant ``Q.F``;
* head: LIF -> grouped Conv3d over (T, h, w) on spikes -> requant (BN3d folded) to int8 ->
  linear int8 x int8 -> requant to int32 logits with ``logit_frac_bits`` fractional bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import intops
from .intlayers import (
    NULL_TRACER,
    IntAttention,
    IntConv,
    IntEmbed,
    IntLIF,
    IntLinear,
    IntModelBase,
    Requant,
    Tracer,
)
from .quant import LayerFolder, calibrate, int8_scale, make_requant, residual_frac_bits
from .svformer import CBlock, SABlock, SVFormer

# --------------------------------------------------------------------------------------------
# Integer blocks
# --------------------------------------------------------------------------------------------

@dataclass
class IntCMlp:
    act1: IntLIF
    fc1: IntConv
    act2: IntLIF
    fc2: IntConv

    def __call__(self, x: torch.Tensor, tr: Tracer) -> torch.Tensor:
        return self.fc2(self.act2(self.fc1(self.act1(x, tr), tr), tr), tr)


@dataclass
class IntCBlock:
    act1: IntLIF
    conv1: IntConv   # spikes -> int8
    attn: IntConv    # depthwise 5x5, int8 -> int8
    conv2: IntConv   # int8 -> Q.F (norm2 folded)
    mlp: IntCMlp
    bits: int

    def __call__(self, x: torch.Tensor, tr: Tracer) -> torch.Tensor:
        y = self.conv2(self.attn(self.conv1(self.act1(x, tr), tr), tr), tr)
        x = intops.shortcut(x, y, self.bits)
        return intops.shortcut(x, self.mlp(x, tr), self.bits)


@dataclass
class IntMlp:
    act1: IntLIF
    fc1: IntLinear
    act2: IntLIF
    fc2: IntLinear

    def __call__(self, x: torch.Tensor, tr: Tracer) -> torch.Tensor:
        return self.fc2(self.act2(self.fc1(self.act1(x, tr), tr), tr), tr)


@dataclass
class IntSelfAttention:
    in_lif: IntLIF
    qkv: IntLinear          # spikes -> Q.F (norm1 folded), 3C channels (q|k|v, head, d)
    q_lif: IntLIF
    k_lif: IntLIF
    v_lif: IntLIF
    attn: IntAttention      # counts -> Q.F
    proj_lif: IntLIF
    proj: IntLinear         # spikes -> Q.F (norm2 folded)

    def qkv_spikes(self, x: torch.Tensor, tr: Tracer = NULL_TRACER):
        y = self.qkv(self.in_lif(x, tr), tr)
        q, k, v = y.chunk(3, dim=-1)
        return self.q_lif(q.contiguous(), tr), self.k_lif(k.contiguous(), tr), self.v_lif(v.contiguous(), tr)

    def __call__(self, x: torch.Tensor, tr: Tracer) -> torch.Tensor:
        q, k, v = self.qkv_spikes(x, tr)
        return self.proj(self.proj_lif(self.attn(q, k, v, tr), tr), tr)


@dataclass
class IntSABlock:
    attn: IntSelfAttention
    mlp: IntMlp
    bits: int

    def __call__(self, x: torch.Tensor, tr: Tracer) -> torch.Tensor:
        t, b, c, h, w = x.shape
        x = x.flatten(3).transpose(2, 3).contiguous()
        x = intops.shortcut(x, self.attn(x, tr), self.bits)
        x = intops.shortcut(x, self.mlp(x, tr), self.bits)
        return x.transpose(2, 3).reshape(t, b, c, h, w).contiguous()


@dataclass
class IntSVFormer(IntModelBase):
    """Integer SVFormer. ``forward(int8 clip (B, 3, T, H, W)) -> int32 logits (B, classes)``."""

    patch_embed1: IntEmbed = None
    blocks1: list = field(default_factory=list)
    patch_embed2: IntEmbed = None
    blocks2: list = field(default_factory=list)
    patch_embed3: IntEmbed = None
    blocks3: list = field(default_factory=list)
    patch_embed4: IntEmbed = None
    blocks4: list = field(default_factory=list)
    lplif: IntLIF = None
    lpDWConv: IntConv = None
    lpPWConv: IntConv = None
    lif_bf_head: IntLIF = None
    head_weight: torch.Tensor = None   # int8 (2C4, 2, T, h, w), groups = C4
    head_groups: int = 1
    head_rq: Requant = None            # -> int8 (dwconv_bn folded)
    head: IntLinear = None             # int8 -> int32 logits

    def forward(self, clip: torch.Tensor, tracer: Tracer = NULL_TRACER) -> torch.Tensor:
        self.check_int_clip(clip)
        tr = tracer
        tr.record("input", "clip", clip)
        x = self.patch_embed1(clip.permute(2, 0, 1, 3, 4).contiguous(), tr)
        for blk in self.blocks1:
            x = blk(x, tr)
        x = self.patch_embed2(x, tr)
        for blk in self.blocks2:
            x = blk(x, tr)
        x = self.patch_embed3(x, tr)
        x_lp = self.lpPWConv(self.lpDWConv(self.lplif(x, tr), tr), tr)
        for blk in self.blocks3:
            x = blk(x, tr)
        x = self.patch_embed4(x, tr)
        for blk in self.blocks4:
            x = blk(x, tr)
        s = self.lif_bf_head(torch.cat((x_lp, x), dim=2), tr)
        a = self.head_rq.traced("dwconv_bf_head", self.head_volume(s), "flat", tr)
        return self.head(a, tr)

    __call__ = forward

    def head_volume(self, s: torch.Tensor) -> torch.Tensor:
        """Grouped Conv3d whose kernel covers the whole (T, h, w) volume: int32 ``(B, 2*C4)``."""
        t, b, c, h, w = s.shape
        g = self.head_groups
        x = s.permute(1, 2, 0, 3, 4).reshape(b, g, (c // g) * t * h * w).to(torch.int32)
        wt = self.head_weight.reshape(g, c // g, -1).to(torch.int32)   # (g, out/g, in/g * T*h*w)
        return torch.einsum("bgk,gok->bgo", x, wt).reshape(b, c)


# --------------------------------------------------------------------------------------------
# Quantizer
# --------------------------------------------------------------------------------------------

def _residual_points(model: SVFormer) -> list[str]:
    names = [f"patch_embed{i}" for i in range(1, 5)] + ["lpBN"]
    for stage in ("blocks1", "blocks2", "blocks3", "blocks4"):
        names += [f"{stage}.{i}" for i in range(len(getattr(model, stage)))]
    return names


def _int8_points(model: SVFormer) -> list[str]:
    names = ["lpDWConv", "dwconv_bn"]
    for stage in ("blocks1", "blocks2"):
        for i in range(len(getattr(model, stage))):
            names += [f"{stage}.{i}.conv1", f"{stage}.{i}.attn"]
    return names


def quantize_svformer(model: SVFormer, calib_clips: list[torch.Tensor], res_bits: int = 16,
                      logit_frac_bits: int = 16) -> IntSVFormer:
    """Map a trained float SVFormer to the integer model, calibrating on ``calib_clips``.

    ``calib_clips``: float clips ``(B, 3, T, H, W)`` (normalised) the formats are chosen from.
    """
    if not calib_clips:
        raise ValueError("quantisation needs at least one calibration clip")
    cfg = model.cfg
    stats = calibrate(model, calib_clips, _residual_points(model) + _int8_points(model))
    in_max = max(float(c.abs().max()) for c in calib_clips)
    res_max = max(stats[n] for n in _residual_points(model))
    f = residual_frac_bits(res_max, res_bits)
    fo = LayerFolder(f, res_bits)
    in_scale = int8_scale(in_max)

    def cblock(blk: CBlock, name: str) -> IntCBlock:
        s1 = int8_scale(stats[f"{name}.conv1"])
        s2 = int8_scale(stats[f"{name}.attn"])
        m = blk.mlp
        return IntCBlock(
            act1=fo.lif(blk.act1, f"{name}.act1"),
            conv1=fo.conv(blk.conv1, None, f"{name}.conv1", out_scale=s1, out_bits=8),
            attn=fo.conv(blk.attn, None, f"{name}.attn", in_scale=s1, out_scale=s2, out_bits=8,
                         spike_input=False),
            conv2=fo.conv(blk.conv2, blk.norm2, f"{name}.conv2", in_scale=s2, spike_input=False),
            mlp=IntCMlp(fo.lif(m.act1, f"{name}.mlp.act1"), fo.conv(m.fc1, m.norm1, f"{name}.mlp.fc1"),
                        fo.lif(m.act2, f"{name}.mlp.act2"), fo.conv(m.fc2, m.norm2, f"{name}.mlp.fc2")),
            bits=res_bits)

    def sablock(blk: SABlock, name: str) -> IntSABlock:
        a, m = blk.attn, blk.mlp
        att_rq = make_requant(torch.full((a.num_heads * a.head_dim,), a.scale), torch.zeros(1),
                              fo.res_scale, res_bits, f"{name}.attn.attn")
        return IntSABlock(
            attn=IntSelfAttention(
                in_lif=fo.lif(a.in_lif, f"{name}.attn.in_lif"),
                qkv=fo.linear(a.qkv, a.norm1, f"{name}.attn.qkv"),
                q_lif=fo.lif(a.q_lif, f"{name}.attn.q_lif"),
                k_lif=fo.lif(a.k_lif, f"{name}.attn.k_lif"),
                v_lif=fo.lif(a.v_lif, f"{name}.attn.v_lif"),
                attn=IntAttention(f"{name}.attn.attn", a.num_heads, "dot", "frame", att_rq),
                proj_lif=fo.lif(a.proj_lif, f"{name}.attn.proj_lif"),
                proj=fo.linear(a.proj, a.norm2, f"{name}.attn.proj")),
            mlp=IntMlp(fo.lif(m.act1, f"{name}.mlp.act1"), fo.linear(m.fc1, m.norm1, f"{name}.mlp.fc1"),
                       fo.lif(m.act2, f"{name}.mlp.act2"), fo.linear(m.fc2, m.norm2, f"{name}.mlp.fc2")),
            bits=res_bits)

    def embed(pe, name, first=False) -> IntEmbed:
        if first:
            return IntEmbed(fo.conv(pe.proj, pe.norm, f"{name}.proj", in_scale=in_scale, spike_input=False))
        return IntEmbed(fo.conv(pe.proj, pe.norm, f"{name}.proj"), fo.lif(pe.in_lif, f"{name}.in_lif"))

    s_lp = int8_scale(stats["lpDWConv"])
    s_head = int8_scale(stats["dwconv_bn"])
    head_wq, head_rq = fo.requant(model.dwconv_bf_head.weight, model.dwconv_bf_head.bias, model.dwconv_bn,
                                  1.0, s_head, 8, "dwconv_bf_head")
    head = fo.linear(model.head, None, "head", in_scale=s_head, out_scale=2.0 ** -logit_frac_bits,
                     out_bits=32, spike_input=False, layout="flat")
    return IntSVFormer(
        name="svformer", frames=cfg.frames, img_size=cfg.img_size, in_chans=cfg.in_chans, in_scale=in_scale,
        frac_bits=f, res_bits=res_bits, logit_frac_bits=logit_frac_bits,
        meta={"config": cfg.to_dict(), "calibration": stats, "calibration_clips": len(calib_clips)},
        patch_embed1=embed(model.patch_embed1, "patch_embed1", first=True),
        blocks1=[cblock(b, f"blocks1.{i}") for i, b in enumerate(model.blocks1)],
        patch_embed2=embed(model.patch_embed2, "patch_embed2"),
        blocks2=[cblock(b, f"blocks2.{i}") for i, b in enumerate(model.blocks2)],
        patch_embed3=embed(model.patch_embed3, "patch_embed3"),
        blocks3=[sablock(b, f"blocks3.{i}") for i, b in enumerate(model.blocks3)],
        patch_embed4=embed(model.patch_embed4, "patch_embed4"),
        blocks4=[sablock(b, f"blocks4.{i}") for i, b in enumerate(model.blocks4)],
        lplif=fo.lif(model.lplif, "lplif"),
        lpDWConv=fo.conv(model.lpDWConv, None, "lpDWConv", out_scale=s_lp, out_bits=8),
        lpPWConv=fo.conv(model.lpPWConv, model.lpBN, "lpPWConv", in_scale=s_lp, spike_input=False),
        lif_bf_head=fo.lif(model.lif_bf_head, "lif_bf_head"),
        head_weight=head_wq, head_groups=model.dwconv_bf_head.groups, head_rq=head_rq, head=head)
