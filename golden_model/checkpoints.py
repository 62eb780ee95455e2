"""Load upstream checkpoints into our float models by their parameter names.

Our float models use upstream's module and parameter names (see ``docs/fidelity.md``), so an
upstream checkpoint loads without renaming:

* SVFormer (``yult0821/SVFormer``, SlowFast trainer): a ``.pyth`` file, a dict whose
  ``"model_state"`` entry is the state dict (beside ``"optimizer_state"``, ``"epoch"``, ``"cfg"``).
* SpikeVideoFormer (``JimmyZou/SpikeVideoFormer``, timm/DeiT-style trainer): a ``.pth`` file, a
  dict with a ``"model"`` entry, or a raw state dict.

A ``module.`` prefix (``DataParallel`` / ``DistributedDataParallel``) is stripped. Nothing is
dropped silently: with ``strict=True`` (the default) any missing key, unexpected key or shape
mismatch raises :class:`CheckpointMismatch` listing all of them; with ``strict=False`` the
tensors that match are loaded and the rest is listed in the returned :class:`LoadReport` (e.g. a
checkpoint whose head has another number of classes). Keys can also be skipped on purpose with
``ignore=`` (prefixes); they are reported as ``ignored``.

The committed tables ``golden_model/data/{svformer,spikevideoformer}_upstream_params.json`` list
upstream's state-dict names and shapes (parameters and buffers) as dumped from upstream's own
code; :func:`upstream_param_table` reads them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "CheckpointMismatch",
    "LoadReport",
    "MODEL_FAMILIES",
    "extract_state_dict",
    "load_upstream",
    "upstream_param_table",
    "upstream_table_path",
]

MODEL_FAMILIES = ("svformer", "spikevideoformer")
_DATA = Path(__file__).resolve().parent / "data"
_MAX_LISTED = 40


def _shape(x) -> tuple[int, ...]:
    return tuple(int(d) for d in x)


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the model: missing keys, unexpected keys, shape mismatches.

    Attributes:
        missing: model keys absent from the checkpoint.
        unexpected: checkpoint keys the model does not have.
        mismatched: ``(name, expected_shape, checkpoint_shape)`` for keys present in both.
    """

    def __init__(self, missing: Iterable[str] = (), unexpected: Iterable[str] = (),
                 mismatched: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
                 source: str = "checkpoint"):
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = [(n, _shape(e), _shape(g)) for n, e, g in mismatched]
        self.source = source
        super().__init__(self._message())

    def _message(self) -> str:
        parts = [f"{self.source} does not match the model: {len(self.missing)} missing, "
                 f"{len(self.unexpected)} unexpected, {len(self.mismatched)} shape mismatches"]

        def block(title: str, items: list[str]) -> None:
            if items:
                shown = items[:_MAX_LISTED]
                more = f"\n    ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
                parts.append(f"  {title}:\n" + "\n".join(f"    {s}" for s in shown) + more)

        block("missing keys (in the model, not in the checkpoint)", self.missing)
        block("unexpected keys (in the checkpoint, not in the model)", self.unexpected)
        block("shape mismatches (name: expected vs got)",
              [f"{n}: expected {list(e)} vs got {list(g)}" for n, e, g in self.mismatched])
        if any(k.startswith("head_kd.") for k in self.unexpected):
            parts.append("  hint: head_kd.* comes from a SpikeVideoFormer trained with distillation "
                         "(kd=True), whose eval logits average head and head_kd; pass ignore=('head_kd.',) "
                         "to load the backbone and head only")
        if any(n.startswith("head.") for n, _, _ in self.mismatched):
            parts.append("  hint: the classifier head has another number of classes; strict=False loads "
                         "everything else")
        return "\n".join(parts)


@dataclass
class LoadReport:
    """What :func:`load_upstream` did.

    Attributes:
        source: the checkpoint format found (``"model_state"``, ``"model"``, ``"state_dict"`` or
            ``"raw"``), with the path if one was given.
        loaded: keys copied into the model.
        missing, unexpected, mismatched: as in :class:`CheckpointMismatch` (empty after a strict load).
        ignored: checkpoint keys skipped because they matched an ``ignore`` prefix.
        stripped_prefix: the prefix removed from every key (``"module."``) or ``""``.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    stripped_prefix: str = ""

    @property
    def complete(self) -> bool:
        """True when every model key was loaded and nothing in the checkpoint was left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        return (f"{self.source}: loaded {len(self.loaded)}, missing {len(self.missing)}, "
                f"unexpected {len(self.unexpected)}, shape mismatches {len(self.mismatched)}, "
                f"ignored {len(self.ignored)}")


def extract_state_dict(obj: Mapping) -> tuple[dict[str, torch.Tensor], str, str]:
    """The state dict inside a loaded checkpoint object.

    Returns ``(state_dict, format, stripped_prefix)``; ``format`` is ``"model_state"`` (SVFormer
    ``.pyth``), ``"model"`` (SpikeVideoFormer ``.pth``), ``"state_dict"`` or ``"raw"``. A
    ``module.`` prefix carried by every key is removed.
    """
    if not isinstance(obj, Mapping):
        raise TypeError(f"a checkpoint must be a dict (state dict or wrapper), got {type(obj).__name__}")
    fmt = "raw"
    for key in ("model_state", "model", "state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            obj, fmt = obj[key], key
            break
    sd = dict(obj)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(
            f"not a state dict ({fmt}): entries that are not tensors: {', '.join(map(str, bad[:10]))}"
            + (" ..." if len(bad) > 10 else "")
            + "; expected a raw state dict or a dict with 'model_state' (SVFormer .pyth) or 'model' "
              "(SpikeVideoFormer .pth)")
    prefix = ""
    if sd and all(k.startswith("module.") for k in sd):
        prefix = "module."
        sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd, fmt, prefix


def load_upstream(model: nn.Module, path_or_state_dict: str | os.PathLike | Mapping, *,
                  strict: bool = True, ignore: Iterable[str] = (), weights_only: bool = True) -> LoadReport:
    """Load an upstream checkpoint into ``model`` by parameter name.

    Args:
        model: a :class:`golden_model.svformer.SVFormer` or
            :class:`golden_model.spikevideoformer.SpikeVideoFormer` (any module works).
        path_or_state_dict: a ``.pyth`` / ``.pth`` path, or the already loaded object (a raw state
            dict or a dict with ``"model_state"`` / ``"model"``).
        strict: raise :class:`CheckpointMismatch` on any missing key, unexpected key or shape
            mismatch (nothing is loaded then). With ``False`` load what matches and report the rest.
        ignore: checkpoint key prefixes to skip on purpose (reported in ``LoadReport.ignored``).
        weights_only: passed to :func:`torch.load` for paths. A SpikeVideoFormer training
            checkpoint pickles its ``argparse`` namespace and needs ``False``: only for files you
            trust.

    Returns:
        A :class:`LoadReport`.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        path = Path(path_or_state_dict)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=weights_only)
        except Exception as e:
            if weights_only and "weights_only" in str(e):
                raise ValueError(
                    f"{path}: torch.load(weights_only=True) refused this file (it pickles more than "
                    "tensors, e.g. training arguments); if you trust the file, pass weights_only=False"
                ) from e
            raise
        where = f" {path}"
    else:
        obj, where = path_or_state_dict, ""
    sd, fmt, prefix = extract_state_dict(obj)
    source = f"checkpoint{where} ({fmt})"

    ignore = tuple(ignore)
    ignored = [k for k in sd if ignore and k.startswith(ignore)]
    sd = {k: v for k, v in sd.items() if not (ignore and k.startswith(ignore))}

    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [(k, _shape(own[k].shape), _shape(v.shape)) for k, v in sd.items()
                  if k in own and _shape(own[k].shape) != _shape(v.shape)]
    if strict and (missing or unexpected or mismatched):
        raise CheckpointMismatch(missing, unexpected, mismatched, source=source)

    bad = {n for n, _, _ in mismatched}
    to_load = {k: v for k, v in sd.items() if k in own and k not in bad}
    result = model.load_state_dict(to_load, strict=False)
    # load_state_dict's own report can only list the keys we left out on purpose
    assert not result.unexpected_keys and set(result.missing_keys) == set(missing) | bad
    return LoadReport(source=source, loaded=list(to_load), missing=missing, unexpected=unexpected,
                      mismatched=mismatched, ignored=ignored, stripped_prefix=prefix)


def upstream_table_path(model_family: str) -> Path:
    """Path of the committed JSON table for ``"svformer"`` or ``"spikevideoformer"``."""
    if model_family not in MODEL_FAMILIES:
        raise ValueError(f"unknown model family {model_family!r}; expected one of {', '.join(MODEL_FAMILIES)}")
    return _DATA / f"{model_family}_upstream_params.json"


def upstream_param_table(model_family: str) -> list[tuple[str, tuple[int, ...]]]:
    """Upstream's state-dict ``(name, shape)`` list (parameters and buffers, in upstream order).

    ``"svformer"``: ``Uniformer2d_psnn_try`` with ``exp/svformer_ucf101_scratch/config.yaml``
    (101 classes). ``"spikevideoformer"``: ``metaspikformer_8_512`` with ``att_mode="3D_ham"``
    (1000 classes). The JSON's ``"source"`` and ``"config"`` say exactly what was dumped.
    """
    with open(upstream_table_path(model_family)) as f:
        doc = json.load(f)
    return [(str(name), _shape(shape)) for name, shape in doc["params"]]
