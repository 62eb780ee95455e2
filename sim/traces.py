"""Real attention windows (q, k, v spikes) from the shipped tiny models, for the RTL testbenches.

:func:`trace_windows` runs a shipped checkpoint's integer model on one synthetic test clip with a
:class:`golden_model.intlayers.Tracer` on every attention layer and cuts the traced q/k/v spikes into
the windows the engine sees: per (batch, head) and per frame (``window="frame"``, SVFormer) or
over the whole clip (``"clip"``, SpikeVideoFormer: ``T*H*W`` tokens). Each window carries the
layer's traced read-out counts for it, which must equal ``intops.attention`` of the window.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "golden_model" / "checkpoints"


def shipped(model: str) -> bool:
    """Whether ``golden_model/checkpoints/<model>.pt`` exists."""
    return (CHECKPOINT_DIR / f"{model}.pt").is_file()


def _attentions(obj, found: dict, seen: set) -> None:
    from golden_model.intlayers import IntAttention

    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, IntAttention):
        found[obj.name] = obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _attentions(getattr(obj, f.name), found, seen)
    elif isinstance(obj, list | tuple):
        for x in obj:
            _attentions(x, found, seen)
    elif isinstance(obj, dict):
        for x in obj.values():
            _attentions(x, found, seen)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """LIF spikes as tokens ``(T, B, N, C)``: SVFormer's are already so; ``(T, B, C, H, W)`` -> tokens."""
    return x.flatten(3).transpose(2, 3).contiguous() if x.dim() == 5 else x


def trace_windows(model, clip_index: int = 0, calib: int = 8) -> list[dict]:
    """Attention windows of ``model`` on synthetic test clip ``clip_index``.

    ``model``: a shipped model name / checkpoint path (quantised on ``calib`` clips), or a
    ``golden_model.pipeline.Golden``. Returns dicts ``{"model", "layer", "mode", "t" (None for a
    clip window), "b", "head", "q", "k", "v" (int8 (N, D)), "counts" (int32 (N, D), the traced
    read-out)}``.
    """
    from golden_model.intlayers import Tracer
    from golden_model.pipeline import load_golden
    from golden_model.train import test_split

    g = load_golden(model, calib=calib) if isinstance(model, str | Path) else model
    model = g.name
    found: dict = {}
    _attentions(g.int_model, found, set())
    if not found:
        raise ValueError(f"{model}: no attention layer found in the integer model")
    prefixes = {name.rsplit(".", 1)[0]: att for name, att in found.items()}
    pattern = re.compile("|".join(re.escape(p) + r"\.(q_lif|k_lif|v_lif|attn)$" for p in prefixes))
    tracer = Tracer(lambda name: pattern.search(name) is not None)
    clip, _ = test_split(g.meta, size=clip_index + 1).batch(slice(clip_index, clip_index + 1))
    with torch.inference_mode():
        g.int_model(g.int_model.quantize_clip(clip), tracer)
    windows = []
    for prefix, att in prefixes.items():
        q, k, v = (_tokens(tracer[f"{prefix}.{n}_lif:spikes"]) for n in ("q", "k", "v"))
        counts = tracer[f"{att.name}:counts"]
        t, b, n, c = q.shape
        d = c // att.heads
        # (B, heads, T, N, D) as in IntAttention.counts; a clip window joins T and N
        qs, ks, vs, cs = (x.reshape(t, b, n, att.heads, d).permute(1, 3, 0, 2, 4) for x in (q, k, v, counts))
        if att.window == "clip":
            qs, ks, vs, cs = (x.reshape(b, att.heads, 1, t * n, d) for x in (qs, ks, vs, cs))
        for bi in range(b):
            for h in range(att.heads):
                for ti in range(qs.shape[2]):
                    windows.append({"model": model, "layer": att.name, "mode": att.mode,
                                    "t": None if att.window == "clip" else ti, "b": bi, "head": h,
                                    "q": qs[bi, h, ti].contiguous(), "k": ks[bi, h, ti].contiguous(),
                                    "v": vs[bi, h, ti].contiguous(),
                                    "counts": cs[bi, h, ti].to(torch.int32).contiguous()})
    return windows


def save_trace_windows(models: list[str], path: Path) -> Path:
    """Windows of every shipped model in ``models`` to ``path`` (``torch.save`` of a list)."""
    windows = []
    for m in models:
        if shipped(m):
            windows += trace_windows(m)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(windows, path)
    return path
