"""Shared float layers for multi-step ``(T, B, ...)`` tensors."""

from __future__ import annotations

import torch
from torch import nn


class BatchNormPerStep(nn.BatchNorm1d):
    """BatchNorm with separate statistics and affine terms per (time step, channel).

    Equals SVFormer's ``BatchNorm1d_eT`` / ``BatchNorm2d_eT``: the ``(T, B, C, *rest)`` input is
    viewed as ``(B, T*C, *rest)`` and normalised by one ``BatchNorm`` over ``T*C`` features, so
    the parameters (``weight``, ``bias``, ``running_mean``, ``running_var``: shape ``(T*C,)``,
    index ``t*C + c``) load from upstream checkpoints by name.

    Args:
        channels: C.
        steps: T, the number of time steps the layer is built for; a different T is an error.
    """

    def __init__(self, channels: int, steps: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(channels * steps, eps=eps, momentum=momentum)
        self.channels = channels
        self.steps = steps

    def _check_input_dim(self, x: torch.Tensor) -> None:  # the view below is 3-D for any rank
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3 or x.shape[0] != self.steps or x.shape[2] != self.channels:
            raise ValueError(
                f"expected (T={self.steps}, B, C={self.channels}, ...) input, got {tuple(x.shape)}"
            )
        t, b, c = x.shape[:3]
        rest = x.shape[3:]
        y = x.transpose(0, 1).reshape(b, t * c, -1)
        y = super().forward(y)
        return y.reshape(b, t, c, *rest).transpose(0, 1)

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference affine ``y = x * scale + shift``, each of shape ``(T, C)``."""
        scale = self.weight / torch.sqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return scale.view(self.steps, self.channels), shift.view(self.steps, self.channels)


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference affine ``(scale, shift)`` of a plain BatchNorm, each of shape ``(C,)``."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def steps_apply(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a per-frame module to ``(T, B, ...)`` by folding T into the batch.

    Tensors stay in contiguous (NCHW) order: the float models keep upstream's operation order
    so that their results are bitwise equal to the upstream code (docs/fidelity.md); a
    channels-last layout would be faster on the CPU but sums in another order.
    """
    t, b = x.shape[:2]
    y = module(x.flatten(0, 1))
    return y.reshape(t, b, *y.shape[1:])


def check_clip(clip, in_chans: int, frames: int, img_size: int, integer: bool = False) -> None:
    """Raise unless ``clip`` is a ``(B, in_chans, frames, img_size, img_size)`` clip.

    Float clips (``integer=False``) must be floating point; integer-model clips must be int8.
    Raises ``TypeError`` for the dtype and ``ValueError`` for the shape, naming what was expected.
    """
    if integer:
        if not isinstance(clip, torch.Tensor) or clip.dtype != torch.int8:
            raise TypeError(f"integer clip must be an int8 tensor, got {getattr(clip, 'dtype', type(clip))}")
    elif not isinstance(clip, torch.Tensor) or not clip.is_floating_point():
        raise TypeError(f"clip must be a floating-point tensor, got {getattr(clip, 'dtype', type(clip))}")
    want = (in_chans, frames, img_size, img_size)
    if clip.dim() != 5 or tuple(clip.shape[1:]) != want:
        raise ValueError(f"clip must have shape (B, {', '.join(map(str, want))}) = (B, C, T, H, W), "
                         f"got {tuple(clip.shape)}")
