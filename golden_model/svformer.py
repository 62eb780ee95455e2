"""Float SVFormer (``floating_pt``), trainable with surrogate gradients.

Structure and parameter names follow the upstream ``Uniformer2d_psnn_try`` (SVFormer,
``slowfast/models/uniformer2d_psnn_try.py`` with ``exp/svformer_ucf101_scratch/config.yaml``), so an
upstream ``.pyth`` checkpoint loads by name. The full configuration has 13,801,612 parameters.

Tensors inside the network are multi-step ``(T, B, C, H, W)`` (convolutional stages) or
``(T, B, N, C)`` (attention stages, ``N = H*W`` tokens of one frame). The input clip is
``(B, 3, T, H, W)`` float, normalised (mean 0.45, std 0.225); the output is ``(B, classes)`` logits.

Every branch begins with a ParametricLIF; branches add onto a real-valued residual stream (the
membrane shortcut). BatchNorm has statistics per (time step, channel) (:class:`BatchNormPerStep`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .layers import BatchNormPerStep, check_clip, steps_apply
from .neurons import PLIF


@dataclass(frozen=True)
class SVFormerConfig:
    """Hyper-parameters. ``full()`` is the upstream UCF101 model; ``tiny()`` trains on a CPU."""

    num_classes: int = 101
    img_size: int = 224
    frames: int = 16
    in_chans: int = 3
    embed_dim: tuple[int, int, int, int] = (128, 256, 384, 512)
    depth: tuple[int, int, int, int] = (1, 1, 3, 1)
    head_dim: int = 64
    mlp_ratio: float = 2.0
    drop_path: float = 0.0

    def __post_init__(self) -> None:
        if self.img_size % 32:
            raise ValueError(f"img_size must be a multiple of 32, got {self.img_size}")
        for d in self.embed_dim[2:]:
            if d % self.head_dim:
                raise ValueError(f"embed dim {d} is not a multiple of head_dim {self.head_dim}")
        if self.frames < 1 or self.num_classes < 1:
            raise ValueError("frames and num_classes must be positive")

    @classmethod
    def full(cls, num_classes: int = 101) -> SVFormerConfig:
        return cls(num_classes=num_classes)

    @classmethod
    def tiny(cls, num_classes: int = 10) -> SVFormerConfig:
        return cls(num_classes=num_classes, img_size=64, frames=4, embed_dim=(16, 32, 48, 64),
                   depth=(1, 1, 1, 1), head_dim=16)

    def to_dict(self) -> dict:
        return asdict(self)


class DropPath(nn.Module):
    """Stochastic depth on the batch axis of ``(T, B, ...)`` tensors (identity in eval)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = (torch.rand(1, x.shape[1], *([1] * (x.dim() - 2)), device=x.device) >= self.p).to(x.dtype)
        return x * keep / (1.0 - self.p)


class CMlp(nn.Module):
    """Conv MLP: PLIF -> 1x1 -> BN -> PLIF -> 1x1 -> BN on ``(T, B, C, H, W)``."""

    def __init__(self, dim: int, hidden: int, steps: int):
        super().__init__()
        self.act1 = PLIF()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.norm1 = BatchNormPerStep(hidden, steps)
        self.act2 = PLIF()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.norm2 = BatchNormPerStep(dim, steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(steps_apply(self.fc1, self.act1(x)))
        return self.norm2(steps_apply(self.fc2, self.act2(x)))


class CBlock(nn.Module):
    """Local block: ``x += BN(conv2(dw5x5(conv1(PLIF(x)))))``; ``x += CMlp(x)``.

    ``conv1`` sees spikes; the depthwise 5x5 and ``conv2`` see real values.
    """

    def __init__(self, dim: int, steps: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.act1 = PLIF()
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.drop_path = DropPath(drop_path)
        self.norm2 = BatchNormPerStep(dim, steps)
        self.mlp = CMlp(dim, int(dim * mlp_ratio), steps)

    def local(self, x: torch.Tensor) -> torch.Tensor:
        return steps_apply(lambda y: self.conv2(self.attn(self.conv1(y))), self.act1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.norm2(self.drop_path(self.local(x)))
        return x + self.drop_path(self.mlp(x))


class TokenBN(BatchNormPerStep):
    """:class:`BatchNormPerStep` applied to token tensors ``(T, B, N, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(-2, -1)).transpose(-2, -1)


class Mlp(nn.Module):
    """Token MLP: PLIF -> Linear -> BN -> PLIF -> Linear -> BN on ``(T, B, N, C)``."""

    def __init__(self, dim: int, hidden: int, steps: int):
        super().__init__()
        self.act1 = PLIF()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm1 = TokenBN(hidden, steps)
        self.act2 = PLIF()
        self.fc2 = nn.Linear(hidden, dim)
        self.norm2 = TokenBN(dim, steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.fc1(self.act1(x)))
        return self.norm2(self.fc2(self.act2(x)))


class Attention(nn.Module):
    """Spiking spatial linear attention within each frame, no softmax.

    ``PLIF -> Linear(C, 3C) -> BN -> PLIF on q, k, v -> Q (K^T V) * head_dim**-0.5 -> PLIF ->
    Linear(C, C) -> BN``. ``K^T V`` is a ``head_dim x head_dim`` count matrix summed over the
    ``N = H*W`` tokens of one frame and one head. The 3C channels of ``qkv`` are ordered
    ``(q|k|v, head, d)``.
    """

    def __init__(self, dim: int, num_heads: int, steps: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.in_lif = PLIF()
        self.qkv = nn.Linear(dim, dim * 3)
        self.norm1 = TokenBN(dim * 3, steps)
        self.q_lif = PLIF()
        self.k_lif = PLIF()
        self.v_lif = PLIF()
        self.proj_lif = PLIF()
        self.proj = nn.Linear(dim, dim)
        self.norm2 = TokenBN(dim, steps)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, B, N, C)`` -> ``(T, B, heads, N, head_dim)``."""
        t, b, n, _ = x.shape
        return x.reshape(t, b, n, self.num_heads, self.head_dim).transpose(2, 3)

    def qkv_spikes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v spikes ``(T, B, heads, N, head_dim)`` from the residual stream ``(T, B, N, C)``."""
        y = self.norm1(self.qkv(self.in_lif(x)))
        q, k, v = y.chunk(3, dim=-1)
        return (self.split_heads(self.q_lif(q)), self.split_heads(self.k_lif(k)),
                self.split_heads(self.v_lif(v)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b, n, c = x.shape
        q, k, v = self.qkv_spikes(x)
        o = (q @ (k.transpose(-2, -1) @ v)) * self.scale
        o = o.transpose(2, 3).reshape(t, b, n, c)
        return self.norm2(self.proj(self.proj_lif(o)))


class SABlock(nn.Module):
    """Global block on ``(T, B, C, H, W)``: ``x += Attention(x)``; ``x += Mlp(x)`` over tokens."""

    def __init__(self, dim: int, num_heads: int, steps: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.attn = Attention(dim, num_heads, steps)
        self.drop_path = DropPath(drop_path)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b, c, h, w = x.shape
        x = x.flatten(3).transpose(2, 3)
        x = x + self.drop_path(self.attn(x))
        x = x + self.drop_path(self.mlp(x))
        return x.transpose(2, 3).reshape(t, b, c, h, w)


class PatchEmbed(nn.Module):
    """Downsampling ``[PLIF ->] conv kxk stride s pad 1 -> BN``; the first one sees pixels."""

    def __init__(self, in_chans: int, out_chans: int, patch: int, steps: int, spiking: bool):
        super().__init__()
        if spiking:
            self.in_lif = PLIF()
        self.proj = nn.Conv2d(in_chans, out_chans, patch + 2, stride=patch, padding=1)
        self.norm = BatchNormPerStep(out_chans, steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "in_lif"):
            x = self.in_lif(x)
        return self.norm(steps_apply(self.proj, x))


class SVFormer(nn.Module):
    """SVFormer: stem + CBlock stages 1-2 + SABlock stages 3-4 + local path + Conv3d head."""

    def __init__(self, cfg: SVFormerConfig):
        super().__init__()
        self.cfg = cfg
        t, e = cfg.frames, cfg.embed_dim
        n = sum(cfg.depth)
        dpr = [cfg.drop_path * i / max(n - 1, 1) for i in range(n)]  # linear 0 .. drop_path
        heads = [d // cfg.head_dim for d in e]
        self.patch_embed1 = PatchEmbed(cfg.in_chans, e[0], 4, t, spiking=False)
        self.blocks1 = nn.ModuleList(CBlock(e[0], t, cfg.mlp_ratio, dpr.pop(0)) for _ in range(cfg.depth[0]))
        self.patch_embed2 = PatchEmbed(e[0], e[1], 2, t, spiking=True)
        self.blocks2 = nn.ModuleList(CBlock(e[1], t, cfg.mlp_ratio, dpr.pop(0)) for _ in range(cfg.depth[1]))
        self.patch_embed3 = PatchEmbed(e[1], e[2], 2, t, spiking=True)
        self.blocks3 = nn.ModuleList(
            SABlock(e[2], heads[2], t, cfg.mlp_ratio, dpr.pop(0)) for _ in range(cfg.depth[2]))
        self.patch_embed4 = PatchEmbed(e[2], e[3], 2, t, spiking=True)
        self.blocks4 = nn.ModuleList(
            SABlock(e[3], heads[3], t, cfg.mlp_ratio, dpr.pop(0)) for _ in range(cfg.depth[3]))
        # local path from the stage-3 input, fused with the stage-4 output
        self.lplif = PLIF()
        self.lpDWConv = nn.Conv2d(e[2], e[2], 3, stride=2, padding=1, groups=e[2])
        self.lpPWConv = nn.Conv2d(e[2], e[3], 1)
        self.lpBN = BatchNormPerStep(e[3], t)
        feat = 2 * e[3]
        self.lif_bf_head = PLIF()
        self.dwconv_bf_head = nn.Conv3d(feat, feat, (t, cfg.img_size // 32, cfg.img_size // 32), groups=e[3])
        self.dwconv_bn = nn.BatchNorm3d(feat)
        self.head = nn.Linear(feat, cfg.num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def check_clip(self, x: torch.Tensor) -> None:
        """Raise unless ``x`` is a float ``(B, in_chans, frames, img, img)`` clip."""
        c = self.cfg
        check_clip(x, c.in_chans, c.frames, c.img_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, B, 3, H, W)`` -> fused features ``(T, B, 2*C4, H/32, W/32)``."""
        x = self.patch_embed1(x)
        for blk in self.blocks1:
            x = blk(x)
        x = self.patch_embed2(x)
        for blk in self.blocks2:
            x = blk(x)
        x = self.patch_embed3(x)
        x_lp = self.lpBN(steps_apply(lambda y: self.lpPWConv(self.lpDWConv(y)), self.lplif(x)))
        for blk in self.blocks3:
            x = blk(x)
        x = self.patch_embed4(x)
        for blk in self.blocks4:
            x = blk(x)
        return torch.cat((x_lp, x), dim=2)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        self.check_clip(clip)
        x = self.forward_features(clip.permute(2, 0, 1, 3, 4))
        x = self.lif_bf_head(x).permute(1, 2, 0, 3, 4)  # (B, C, T, H, W)
        x = self.dwconv_bn(self.dwconv_bf_head(x)).flatten(1)
        return self.head(x)
