"""Compile an integer model into an accelerator :class:`Program`: which layers run where, tiled and packed.

``compile_model(int_model, info)`` walks a bit-accurate integer model (``golden_model.intlayers``)
and decides for every layer:

* **accelerator** (``docs/protocol.md`` ops): linear layers and groups = 1 convolutions on
  spikes (LINEAR; a ``k x k`` convolution runs as a linear layer over its ``C_in * k * k`` spike
  patches, gathered on the host), every LIF (LIF) and every spike-driven attention (ATTENTION,
  compact command stream; on a device without an attention engine, INFO ``att_dim_max = 0``, attention
  runs on the host). Requant happens on the device with the layer's parameters.
* **host** (the golden model's integer ops): the pixel stem and every layer on int8 activations,
  depthwise convolutions, residual shortcuts and the classifier head.

Offloaded weights are tiled over output channels so that one tile fits the device's weight rows,
parameter channels and frame size (:func:`pack_weight_rows` gives the row layout). A fan-in above
``in_max`` is split too: each part runs as a LINEAR with the raw accumulator out (``out_bits = 32``,
``M = 2, S = 1, B = 0``), the host adds the partial sums (exact in int32) and requantises. A layer
the device cannot hold at all (one lane group of one fan-in part needs more weight rows than the
device has, more requant channels than ``param_channels``) makes :func:`compile_model` raise
:class:`ModelDoesNotFit` naming every such layer; run-time limits (``dim > att_dim_max``, a window
above ``att_max_tokens``) raise when the layer runs, before it sends anything.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import torch

from golden_model.intlayers import IntAttention, IntConv, IntLIF, IntLinear, IntModelBase, Requant

__all__ = ["ModelDoesNotFit", "WeightTile", "LayerPlan", "Program", "compile_model", "pack_weight_rows",
           "offload_kind", "walk_layers", "with_planned_layers"]


class ModelDoesNotFit(ValueError):
    """The model has layers the device cannot hold (the message lists them)."""


@dataclass
class WeightTile:
    """Output channels ``[lo, hi)`` and fan-in ``[k_lo, k_hi)`` of a layer, as device weight rows
    ``((k_hi - k_lo) * G, P)`` int8."""

    lo: int
    hi: int
    rows: torch.Tensor
    k_lo: int = 0
    k_hi: int = 0


@dataclass
class LayerPlan:
    """One offloaded layer: its kind, shapes and packed weight tiles."""

    name: str
    kind: str                 # "linear" | "conv" | "lif" | "attention"
    layer: object             # the integer layer it replaces
    c_in: int = 0             # LINEAR fan-in (conv: C_in * k * k)
    c_out: int = 0            # output channels (LIF: channels; attention: heads * dim)
    tiles: list[WeightTile] = field(default_factory=list)
    lif_tokens: int = 0       # LIF: tokens per membrane tile
    dim: int = 0              # attention head dimension


@dataclass
class Program:
    """What :func:`driver.run.run` executes: the integer model, the device limits and the layer plans."""

    int_model: IntModelBase
    info: object              # driver.protocol.DeviceInfo
    plans: dict[str, LayerPlan]
    host_layers: list[str]

    def summary(self) -> dict:
        kinds: dict[str, int] = {}
        for p in self.plans.values():
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        return {"offloaded": len(self.plans), "by_kind": kinds, "host": len(self.host_layers),
                "weight_tiles": sum(len(p.tiles) for p in self.plans.values()),
                "weight_bytes": sum(t.rows.numel() for p in self.plans.values() for t in p.tiles)}


def walk_layers(obj, seen: set | None = None):
    """Every integer layer object in a model tree (dataclasses, lists, dicts), each once, in order."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, torch.Tensor | Requant):
        return
    seen.add(id(obj))
    if isinstance(obj, IntLIF | IntLinear | IntConv | IntAttention):
        yield obj
        return
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from walk_layers(getattr(obj, f.name), seen)
    elif isinstance(obj, list | tuple):
        for x in obj:
            yield from walk_layers(x, seen)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from walk_layers(x, seen)


def offload_kind(layer) -> str | None:
    """The accelerator op kind of ``layer``, or None for a host layer."""
    if isinstance(layer, IntLIF):
        return "lif"
    if isinstance(layer, IntAttention):
        return "attention"
    if isinstance(layer, IntLinear) and layer.spike_input:
        return "linear"
    if isinstance(layer, IntConv) and layer.spike_input and layer.groups == 1:
        return "conv"
    return None


def pack_weight_rows(weight: torch.Tensor, lanes: int, lo: int = 0, hi: int | None = None) -> torch.Tensor:
    """Device weight rows of output channels ``[lo, hi)`` of ``weight`` int8 ``(C_out, K)``.

    Row ``i * G + g`` (``G = ceil((hi - lo) / P)``) lane ``l`` holds ``weight[lo + g*P + l, i]``,
    0 beyond ``hi``. Returns int8 ``(K * G, P)``.
    """
    hi = weight.shape[0] if hi is None else hi
    w = weight[lo:hi]
    g = -(-w.shape[0] // lanes)
    padded = torch.zeros(g * lanes, w.shape[1], dtype=torch.int8)
    padded[:w.shape[0]] = w
    return padded.reshape(g, lanes, -1).permute(2, 0, 1).reshape(-1, lanes).contiguous()


def _out_bytes(rq: Requant) -> int:
    return rq.out_bits // 8


def _plan_weights(name: str, kind: str, layer, weight: torch.Tensor, info, problems: list[str]) -> LayerPlan:
    c_out, k = weight.shape
    plan = LayerPlan(name, kind, layer, c_in=k, c_out=c_out)
    parts = -(-k // info.in_max)
    k_chunk = -(-k // parts)
    out_bytes = 4 if parts > 1 else _out_bytes(layer.rq)
    g_fit = info.weight_rows // k_chunk
    out_fit = (info.max_payload - 1) // out_bytes
    chunk = min(g_fit * info.lanes, info.param_channels, out_fit)
    if g_fit < 1 or chunk < 1:
        problems.append(f"{name}: one lane group needs {k_chunk} weight rows, the device has {info.weight_rows}")
        return plan
    if chunk < c_out:
        chunk = max(info.lanes, chunk - chunk % info.lanes)  # whole lane groups per tile
    for lo in range(0, c_out, chunk):
        hi = min(c_out, lo + chunk)
        for k_lo in range(0, k, k_chunk):
            k_hi = min(k, k_lo + k_chunk)
            rows = pack_weight_rows(weight[:, k_lo:k_hi], info.lanes, lo, hi)
            plan.tiles.append(WeightTile(lo, hi, rows, k_lo, k_hi))
    return plan


def compile_model(int_model: IntModelBase, info) -> Program:
    """Plan ``int_model`` for a device with limits ``info`` (``driver.protocol.DeviceInfo``)."""
    if not isinstance(int_model, IntModelBase):
        raise TypeError(f"compile_model needs a golden_model integer model, got {type(int_model).__name__}")
    plans: dict[str, LayerPlan] = {}
    host: list[str] = []
    problems: list[str] = []
    for layer in walk_layers(int_model):
        kind = offload_kind(layer)
        name = layer.name
        if kind is None or (kind == "attention" and not info.att_dim_max):   # no attention engine
            host.append(name)
        elif kind == "linear":
            plans[name] = _plan_weights(name, kind, layer, layer.weight, info, problems)
        elif kind == "conv":
            plans[name] = _plan_weights(name, kind, layer, layer.weight.reshape(layer.weight.shape[0], -1), info,
                                        problems)
        elif kind == "lif":
            plans[name] = LayerPlan(name, kind, layer)
        else:
            dim = layer.rq.channels // layer.heads
            plans[name] = LayerPlan(name, kind, layer, c_out=layer.rq.channels, dim=dim)
            if dim > info.param_channels:
                problems.append(f"{name}: head dim {dim} > param_channels {info.param_channels}")
    if problems:
        raise ModelDoesNotFit(f"{int_model.name}: {len(problems)} layer(s) do not fit the device: "
                              + "; ".join(problems))
    return Program(int_model, info, plans, host)


def with_planned_layers(obj, program: Program, make, memo: dict | None = None):
    """A structural copy of an integer model tree (dataclasses, lists, tuples) in which every layer that
    ``program`` plans is replaced by ``make(kind, plan)`` (``kind``: :func:`offload_kind`); tensors,
    requant parameters and every other object are shared, not copied."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, torch.Tensor | Requant):
        return obj
    kind = offload_kind(obj)
    if kind is not None and getattr(obj, "name", None) in program.plans:
        new = make(kind, program.plans[obj.name])
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        new = copy.copy(obj)
        memo[id(obj)] = new
        for f in dataclasses.fields(obj):
            object.__setattr__(new, f.name, with_planned_layers(getattr(obj, f.name), program, make, memo))
    elif isinstance(obj, list):
        new = [with_planned_layers(x, program, make, memo) for x in obj]
    elif isinstance(obj, tuple):
        new = tuple(with_planned_layers(x, program, make, memo) for x in obj)
    else:
        new = obj
    memo[id(obj)] = new
    return new
