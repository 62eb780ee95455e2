"""``spikevid energy``: per-layer SOPs, MACs and energy of one clip through a float model.

Tiny models (``*-tiny``) use the shipped trained checkpoint when there is one and a clip of the
synthetic test set; full-size models use a random initialisation (seed 0) and a random
normalised clip, which the output says. See :mod:`golden_model.energy` for the definitions.
"""

from __future__ import annotations

import importlib
import os

import torch


def _optional(module: str):
    """``golden_model.<module>`` or None if it does not exist (yet)."""
    try:
        return importlib.import_module(f"golden_model.{module}")
    except ModuleNotFoundError as e:
        if e.name != f"golden_model.{module}":
            raise
        return None


def load_model(name: str, checkpoint: str | None) -> tuple[torch.nn.Module, list[str]]:
    """The model to profile and notes saying where its weights came from."""
    from golden_model.zoo import build_model

    train = _optional("train")
    if checkpoint is not None:
        if train is None:
            raise ValueError("--checkpoint needs golden_model.train (load_checkpoint), not available")
        if not os.path.exists(checkpoint):
            raise FileNotFoundError(f"checkpoint {checkpoint} not found")
        model, meta = train.load_checkpoint(checkpoint)
        return model, [f"weights: checkpoint {checkpoint}" + _meta_note(meta)]
    if name.endswith("-tiny"):
        path = None
        if train is not None and hasattr(train, "default_checkpoint"):
            try:
                path = train.default_checkpoint(name)
            except (KeyError, ValueError, FileNotFoundError):
                path = None
        if path is not None and os.path.exists(path):
            model, meta = train.load_checkpoint(path)
            return model, [f"weights: shipped trained checkpoint {path}" + _meta_note(meta)]
        why = "golden_model.train not available" if train is None else "no shipped checkpoint"
        torch.manual_seed(0)
        return build_model(name), [f"weights: RANDOM INIT (seed 0; {why}) - not a trained model"]
    torch.manual_seed(0)
    return build_model(name), ["weights: RANDOM INIT (seed 0; full-size model, no trained weights) "
                               "- firing rates are not those of a trained model"]


def _meta_note(meta) -> str:
    if not isinstance(meta, dict):
        return ""
    keys = [k for k in ("model", "test_acc", "accuracy", "epochs") if k in meta]
    return "" if not keys else " (" + ", ".join(f"{k}={meta[k]}" for k in keys) + ")"


def make_clip(model: torch.nn.Module, seed: int, synthetic: bool) -> tuple[torch.Tensor, str]:
    """A ``(1, C, T, H, W)`` normalised clip and a note saying what it is."""
    from golden_model.energy import random_clip

    cfg = model.cfg
    data = _optional("data") if synthetic else None
    if data is not None and cfg.in_chans == 3:
        ds = data.SyntheticActions("test", size=1, frames=cfg.frames, img_size=cfg.img_size, seed=seed)
        x, y = ds[0]
        return x.unsqueeze(0).float(), f"clip: synthetic-actions test clip 0 (seed {seed}, label {y})"
    why = "; golden_model.data not available" if synthetic and data is None else ""
    return random_clip(model, seed), f"clip: RANDOM uniform pixels, normalised (seed {seed}{why})"


def _energy(args) -> int:
    from golden_model.energy import E_AC, E_MAC, profile_clip

    model, notes = load_model(args.model, args.checkpoint)
    clip, clip_note = make_clip(model, args.clip_seed, synthetic=args.model.endswith("-tiny"))
    report = profile_clip(model, clip, name=args.model,
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
    p.add_argument("--clip-seed", type=int, default=0, metavar="N", help="seed of the input clip")
    p.add_argument("--e-ac", type=float, metavar="PJ", help="energy per accumulate, pJ (default 0.9)")
    p.add_argument("--e-mac", type=float, metavar="PJ", help="energy per MAC, pJ (default 4.6)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_energy)
