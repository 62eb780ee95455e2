"""Model registry: build float models by name (``svformer``, ``svformer-tiny``, ...).

======================== ================================================================
name                     config
======================== ================================================================
``svformer``             upstream SVFormer, UCF101 (101 classes), 16 x 224 x 224 RGB
``svformer-tiny``        4 x 64 x 64 RGB, 10 classes (the synthetic dataset)
``svformer-dvs128``      DVS128 Gesture: 2 polarity channels, 11 classes, 16 x 128 x 128
``svformer-dvs128-tiny`` the tiny widths on 2 channels, 11 classes, 4 x 64 x 64
``spikevideoformer``     ``metaspikformer_8_512``, 1000 classes (ImageNet head), 16 x 224 x 224
``spikevideoformer-tiny`` 4 x 64 x 64 RGB, 10 classes
``spikevideoformer-k400`` the full backbone with a Kinetics-400 head (400 classes)
``spikevideoformer-ucf101`` the full backbone with a UCF101 head (101 classes)
======================== ================================================================
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

# name -> (family, size, fixed config fields)
_CONFIGS: dict[str, tuple[str, str, dict]] = {
    "svformer": ("svformer", "full", {}),
    "svformer-tiny": ("svformer", "tiny", {}),
    "spikevideoformer": ("spikevideoformer", "full", {}),
    "spikevideoformer-tiny": ("spikevideoformer", "tiny", {}),
    "svformer-dvs128": ("svformer", "full", {"num_classes": 11, "in_chans": 2, "img_size": 128}),
    "svformer-dvs128-tiny": ("svformer", "tiny", {"num_classes": 11, "in_chans": 2}),
    "spikevideoformer-k400": ("spikevideoformer", "full", {"num_classes": 400}),
    "spikevideoformer-ucf101": ("spikevideoformer", "full", {"num_classes": 101}),
}
MODEL_NAMES = tuple(_CONFIGS)


def model_family(name: str) -> str:
    """``"svformer"`` or ``"spikevideoformer"``."""
    if name not in _CONFIGS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    return _CONFIGS[name][0]


def model_config(name: str, num_classes: int | None = None, **overrides):
    """The config of model ``name`` (``num_classes`` and ``overrides`` replace its fields)."""
    family = model_family(name)
    _, size, fixed = _CONFIGS[name]
    if family == "svformer":
        from .svformer import SVFormerConfig as Config
    else:
        from .spikevideoformer import SpikeVideoFormerConfig as Config
    cfg = Config.tiny() if size == "tiny" else Config.full()
    fields = dict(fixed)
    if num_classes is not None:
        fields["num_classes"] = num_classes
    fields.update(overrides)
    return replace(cfg, **fields) if fields else cfg


def build_model(name: str, num_classes: int | None = None, **overrides) -> nn.Module:
    """A freshly initialised float model. ``num_classes`` defaults to the config's."""
    cfg = model_config(name, num_classes, **overrides)
    if model_family(name) == "svformer":
        from .svformer import SVFormer as Model
    else:
        from .spikevideoformer import SpikeVideoFormer as Model
    return Model(cfg)
