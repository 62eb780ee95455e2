"""``spikevid model info <name> [--json]``: parameter count and dense operations per clip.

Dense MACs are counted from shapes for one clip (batch 1) by
:func:`golden_model.energy.dense_counts`: every Conv1d/2d/3d and Linear (output elements x
fan-in, biases not counted) plus the two attention matmuls per attention module (``K^T V`` and
``Q (K^T V)``, each ``N x D x D`` per head and attention window). BatchNorm, neurons, residual
additions and pooling are not counted. FLOPs = 2 x MACs (one MAC = one multiply + one add).
"""

from __future__ import annotations

import json

# Published parameter counts, for comparison with ours.
# name -> (number, as published, source)
PUBLISHED_PARAMS = {
    "svformer": (13_801_612, "13,801,612", "upstream SVFormer (Uniformer2d_psnn_try, UCF101, 101 classes)"),
    "spikevideoformer": (55_000_000, "55 M", "SpikeVideoFormer paper, 8-512 backbone (1000 classes)"),
}


def model_info(name: str) -> dict:
    """Parameters and dense MACs/FLOPs per clip of ``golden_model.zoo.build_model(name)``."""
    from golden_model.energy import dense_counts, model_clip_shape
    from golden_model.zoo import build_model

    model = build_model(name)
    params = sum(p.numel() for p in model.parameters())
    rows = dense_counts(model.to("meta"))
    layer_macs = sum(r.dense_macs for r in rows if not r.op.startswith("attn"))
    attn_macs = sum(r.dense_macs for r in rows if r.op.startswith("attn"))
    macs = layer_macs + attn_macs
    info = {
        "model": name,
        "config": model.cfg.to_dict(),
        "clip_shape": list(model_clip_shape(model)),
        "params": params,
        "published_params": None,
        "published_params_text": None,
        "published_params_source": None,
        "dense_macs_per_clip": macs,
        "dense_macs_layers": layer_macs,
        "dense_macs_attention": attn_macs,
        "dense_flops_per_clip": 2 * macs,
        "gflops_per_clip": 2 * macs / 1e9,
        "flops_convention": "1 MAC = 2 FLOPs; conv/linear (no bias) + attention matmuls; "
                            "BN, neurons, residual adds, pooling not counted",
        "notes": [],
        "layers": len([r for r in rows if not r.op.startswith("attn")]),
        "attention_products": len([r for r in rows if r.op.startswith("attn")]),
    }
    if name.startswith("spikevideoformer"):
        info["notes"] = ["q/k/v/proj RepConvs counted as built (1x1 -> dw3x3 -> 1x1), not as the fused "
                         "3x3 conv"]
        if name == "spikevideoformer":
            info["notes"].append(f"T = {model.cfg.frames} frames per clip is an assumption (see "
                                 "golden_model.spikevideoformer)")
    if name in PUBLISHED_PARAMS:
        (info["published_params"], info["published_params_text"],
         info["published_params_source"]) = PUBLISHED_PARAMS[name]
    return info


def format_info(info: dict) -> str:
    pub = info["published_params"]
    pub_s = ("n/a (our reduced config)" if pub is None
             else f"{info['published_params_text']} ({info['published_params_source']})")
    clip = "x".join(map(str, info["clip_shape"]))
    return "\n".join([
        f"model {info['model']}",
        f"  parameters        {info['params']:,}",
        f"  published         {pub_s}",
        f"  clip (B,C,T,H,W)  {clip}",
        f"  dense MACs/clip   {info['dense_macs_per_clip']:,} "
        f"(conv/linear {info['dense_macs_layers']:,}, attention {info['dense_macs_attention']:,})",
        f"  dense FLOPs/clip  {info['dense_flops_per_clip']:,} = {info['gflops_per_clip']:.4g} GFLOPs "
        f"(1 MAC = 2 FLOPs)",
        f"  counted           {info['layers']} conv/linear layers, {info['attention_products']} attention "
        f"products; BN, neurons, residual adds, pooling not counted",
        *(f"  note              {n}" for n in info["notes"]),
    ])


def _info(args) -> int:
    info = model_info(args.name)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def register(sub) -> None:
    from golden_model.zoo import MODEL_NAMES

    p = sub.add_parser("model", help="model information", description=__doc__)
    msub = p.add_subparsers(dest="model_command", required=True)
    i = msub.add_parser("info", help="parameters and dense FLOPs per clip")
    i.add_argument("name", choices=MODEL_NAMES)
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_info)
