"""Real spike-input Linear / 1x1-conv layers (input spikes, int8 weights, accumulators) from the shipped models.

:func:`trace_layers` runs a shipped checkpoint's integer model on one synthetic test clip with a
:class:`golden_model.intlayers.Tracer` and cuts out, for every layer the spike-accumulate engine runs
(an ``IntLinear`` on spikes, or an ``IntConv`` on spikes with a dense 1x1 kernel, stride 1, no padding),
its input spikes as tokens ``x: (n, c_in)``, its int8 weight ``(c_out, c_in)`` and its traced
accumulators ``acc: (n, c_out)`` (the layer's ``:acc`` record, before requant), which must equal
``intops.linear_int8(x, weight)``. Token order: ``(T, B, N)`` for token layouts, ``(T, B, H, W)``
for a 1x1 convolution (one token per pixel).

The input of a layer is the LIF of the same block that feeds it: the nearest ``IntLIF`` field before
the layer in its dataclass (``act1 -> fc1``, ``act2 -> fc2``, ``in_lif -> qkv``, ``proj_lif -> proj``),
or the block's first ``IntLIF``; every pairing is checked: ``intops.linear_int8(x, weight)`` must equal
the traced accumulators (else :func:`trace_layers` raises).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from golden_model import intops
from sim.traces import shipped

__all__ = ["spike_layers", "trace_layers", "save_layer_traces"]


def _dense_1x1(conv) -> bool:
    return (conv.weight.dim() == 4 and tuple(conv.weight.shape[2:]) == (1, 1) and conv.groups == 1
            and conv.stride == 1 and conv.padding == 0)


def spike_layers(model) -> list[tuple[object, object]]:
    """``(layer, input LIF)`` of every spike-input Linear / dense 1x1 conv in an integer model."""
    from golden_model.intlayers import IntConv, IntLIF, IntLinear

    found: list[tuple[object, object]] = []
    seen: set[int] = set()

    def walk(obj) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            fields = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
            lifs = [(i, v) for i, (_, v) in enumerate(fields) if isinstance(v, IntLIF)]
            for i, (_, v) in enumerate(fields):
                eligible = (isinstance(v, IntLinear) and v.spike_input and v.layout == "tokens") or (
                    isinstance(v, IntConv) and v.spike_input and _dense_1x1(v))
                if eligible and lifs:
                    before = [lif for j, lif in lifs if j < i]
                    found.append((v, before[-1] if before else lifs[0][1]))
            for _, v in fields:
                walk(v)
        elif isinstance(obj, list | tuple):
            for x in obj:
                walk(x)
        elif isinstance(obj, dict):
            for x in obj.values():
                walk(x)

    walk(model)
    return found


def _tokens(t: torch.Tensor) -> torch.Tensor:
    """``(T, B, N, C)`` tokens or ``(T, B, C, H, W)`` pixels -> ``(n, C)``."""
    if t.dim() == 5:
        t = t.permute(0, 1, 3, 4, 2)
    return t.reshape(-1, t.shape[-1]).contiguous()


def trace_layers(model, clip_index: int = 0, calib: int = 8) -> list[dict]:
    """Spike-input Linear / 1x1-conv layers of ``model`` on synthetic test clip ``clip_index``.

    ``model``: a shipped model name / checkpoint path (quantised on ``calib`` clips), or a
    ``golden_model.pipeline.Golden``. Returns dicts ``{"model", "layer", "kind" ("linear" / "conv1x1"),
    "x" (int8 (n, c_in) spikes), "weight" (int8 (c_out, c_in)), "acc" (int32 (n, c_out), traced)}``.
    """
    from golden_model.intlayers import IntConv, Tracer
    from golden_model.pipeline import load_golden
    from golden_model.train import test_split

    g = load_golden(model, calib=calib) if isinstance(model, str | Path) else model
    pairs = spike_layers(g.int_model)
    if not pairs:
        raise ValueError(f"{g.name}: no spike-input Linear / 1x1-conv layer found in the integer model")
    names = {layer.name for layer, _ in pairs} | {lif.name for _, lif in pairs}
    tracer = Tracer(names)
    clip, _ = test_split(g.meta, size=clip_index + 1).batch(slice(clip_index, clip_index + 1))
    with torch.inference_mode():
        g.int_model(g.int_model.quantize_clip(clip), tracer)
    layers = []
    for layer, lif in pairs:
        x = _tokens(tracer[f"{lif.name}:spikes"])
        acc = _tokens(tracer[f"{layer.name}:acc"]).to(torch.int32)
        conv = isinstance(layer, IntConv)
        weight = (layer.weight[:, :, 0, 0] if conv else layer.weight).contiguous()
        if x.shape != (acc.shape[0], weight.shape[1]) or not torch.equal(intops.linear_int8(x, weight), acc):
            raise ValueError(f"{layer.name}: the spikes of {lif.name} {tuple(x.shape)} and the weight "
                             f"{tuple(weight.shape)} do not give the traced accumulators {tuple(acc.shape)}")
        layers.append({"model": g.name, "layer": layer.name, "kind": "conv1x1" if conv else "linear",
                       "input": lif.name, "x": x, "weight": weight, "acc": acc})
    return layers


def save_layer_traces(models: list[str], path: Path) -> Path:
    """Layers of every shipped model in ``models`` to ``path`` (``torch.save`` of a list)."""
    layers = []
    for m in models:
        if shipped(m):
            layers += trace_layers(m)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(layers, path)
    return path
