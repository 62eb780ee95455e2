"""``spikevid energy``: per-layer SOPs, MACs and energy of one clip through a float model.

Tiny models (``*-tiny``) use the shipped trained checkpoint when there is one and a clip of the
synthetic test set; full-size models use a random initialisation (seed 0) and a random
normalised clip, which the output says. See :mod:`golden_model.energy` for the definitions.
"""

from __future__ import annotations

import os

import torch


def load_model(name: str, checkpoint: str | None) -> tuple[torch.nn.Module, dict | None, list[str]]:
    """The model to profile, its checkpoint meta (or None) and notes saying where its weights
    came from."""
    from golden_model import train
    from golden_model.zoo import build_model

    if checkpoint is not None:
        model, meta = train.load_checkpoint(checkpoint)
        return model, meta, [f"weights: checkpoint {meta.get('path', checkpoint)}" + _meta_note(meta)]
    if name.endswith("-tiny"):
        path = train.default_checkpoint(name)
        if os.path.exists(path):
            model, meta = train.load_checkpoint(path)
            return model, meta, [f"weights: shipped trained checkpoint {path}" + _meta_note(meta)]
        torch.manual_seed(0)
        return build_model(name), None, [f"weights: RANDOM INIT (seed 0; no shipped checkpoint {path})"
                                         " - not a trained model"]
    torch.manual_seed(0)
    return build_model(name), None, ["weights: RANDOM INIT (seed 0; full-size model, no trained "
                                     "weights) - firing rates are not those of a trained model"]


def _meta_note(meta) -> str:
    if not isinstance(meta, dict):
        return ""
    parts = [f"model {meta['model']}"] if "model" in meta else []
    metrics = meta.get("metrics")
    if isinstance(metrics, dict) and "test_acc" in metrics:
        parts.append(f"test acc {metrics['test_acc']:.4f}")
    return f" ({', '.join(parts)})" if parts else ""


def make_clip(model: torch.nn.Module, n: int, synthetic: bool, meta: dict | None = None
              ) -> tuple[torch.Tensor, str]:
    """A ``(1, C, T, H, W)`` normalised clip and a note saying what it is.

    ``synthetic``: clip ``n`` of the synthetic test split (the checkpoint's dataset seed, else
    0) when the shapes fit; otherwise a random clip with seed ``n``.
    """
    from golden_model import data
    from golden_model.energy import random_clip

    cfg = model.cfg
    if synthetic and cfg.in_chans == 3 and cfg.frames >= 2:
        ds = meta.get("dataset") if isinstance(meta, dict) else None
        seed = ds.get("seed", 0) if isinstance(ds, dict) else 0
        clips, labels = data.generate("test", [n], frames=cfg.frames, img_size=cfg.img_size, seed=seed)
        return (data.normalize(clips).float(),
                f"clip: synthetic-actions test clip {n} (dataset seed {seed}, label {int(labels[0])})")
    return random_clip(model, n), f"clip: RANDOM uniform pixels, normalised (seed {n})"


def _energy(args) -> int:
    from golden_model.energy import E_AC, E_MAC, profile_clip

    model, meta, notes = load_model(args.model, args.checkpoint)
    name = meta.get("model", args.model) if isinstance(meta, dict) else args.model
    if args.checkpoint is not None and name != args.model:
        notes.append(f"note: --model {args.model} ignored, the checkpoint holds {name}")
    clip, clip_note = make_clip(model, args.clip_seed, synthetic=name.endswith("-tiny"), meta=meta)
    report = profile_clip(model, clip, name=name,
                          e_ac=E_AC if args.e_ac is None else args.e_ac,
                          e_mac=E_MAC if args.e_mac is None else args.e_mac,
                          notes=[*notes, clip_note])
    print(report.to_json() if args.json else report.format_table())
    return 0


def register(sub) -> None:
    from golden_model.zoo import MODEL_NAMES

    p = sub.add_parser("energy", help="per-layer SOPs/MACs/energy of one clip", description=__doc__)
    p.add_argument("--model", default="svformer-tiny", choices=MODEL_NAMES)
    p.add_argument("--checkpoint", metavar="PATH", help="weights (golden_model.train checkpoint)")
    p.add_argument("--clip-seed", type=int, default=0, metavar="N",
                   help="input clip: index into the synthetic test split (tiny models), else the "
                        "seed of a random clip (default 0)")
    p.add_argument("--e-ac", type=float, metavar="PJ", help="energy per accumulate, pJ (default 0.9)")
    p.add_argument("--e-mac", type=float, metavar="PJ", help="energy per MAC, pJ (default 4.6)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_energy)
