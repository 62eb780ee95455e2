"""Model registry: build float models by name (``svformer``, ``svformer-tiny``, ...)."""

from __future__ import annotations

from torch import nn

MODEL_NAMES = ("svformer", "svformer-tiny", "spikevideoformer", "spikevideoformer-tiny")


def build_model(name: str, num_classes: int | None = None, **overrides) -> nn.Module:
    """A freshly initialised float model. ``num_classes`` defaults to the config's."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    family, _, size = name.partition("-")
    if family == "svformer":
        from .svformer import SVFormer as Model
        from .svformer import SVFormerConfig as Config
    else:
        from .spikevideoformer import SpikeVideoFormer as Model
        from .spikevideoformer import SpikeVideoFormerConfig as Config
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    cfg = Config.tiny(**kwargs) if size == "tiny" else Config.full(**kwargs)
    if overrides:
        from dataclasses import replace
        cfg = replace(cfg, **overrides)
    return Model(cfg)
