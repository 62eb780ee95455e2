"""Train float models on the synthetic action dataset; save, load and evaluate checkpoints.

A checkpoint is a ``torch.save``'d dict (loadable with ``weights_only=True``)::

    {"format": "spikevid-checkpoint-v1", "model": "svformer-tiny", "config": cfg.to_dict(),
     "state_dict": ..., "metrics": {"test_acc", "train_acc", "epochs", "train_size", "test_size",
     "seed", "history", ...}, "dataset": {name, frames, img_size, seed, classes, mean, std, ...},
     "train": {hyper-parameters}}

Shipped checkpoints live in ``golden_model/checkpoints/<model>.pt`` (:func:`default_checkpoint`).

Typical use::

    model, meta = load_checkpoint("svformer-tiny")      # a shipped model name or a path
    test = test_split(meta, size=500)                   # SyntheticActions matching the checkpoint
    acc = evaluate(model, test)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data import NUM_CLASSES, SyntheticActions, normalize
from .zoo import MODEL_NAMES, build_model

CHECKPOINT_FORMAT = "spikevid-checkpoint-v1"
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"

# the settings of the shipped checkpoints (also the `spikevid train` defaults)
DEFAULTS = {
    "svformer-tiny": dict(epochs=12, batch_size=64, lr=3e-3, seed=0, train_size=3000, test_size=500),
    # ~4x the compute per clip of svformer-tiny and slower to learn: smaller batches, more epochs
    # (12 epochs: test acc 0.874)
    "spikevideoformer-tiny": dict(epochs=20, batch_size=16, lr=2e-3, seed=0, train_size=3000, test_size=500),
}
FALLBACK_DEFAULTS = dict(epochs=12, batch_size=64, lr=3e-3, seed=0, train_size=3000, test_size=500)


def train_defaults(model_name: str) -> dict:
    """The default training settings for ``model_name`` (those of its shipped checkpoint)."""
    _check_model(model_name)
    return dict(DEFAULTS.get(model_name, FALLBACK_DEFAULTS))


def default_checkpoint(model_name: str) -> Path:
    """Path of the shipped checkpoint of ``model_name`` (it may not exist for every model)."""
    _check_model(model_name)
    return CHECKPOINT_DIR / f"{model_name}.pt"


def _check_model(name: str) -> None:
    if not isinstance(name, str) or name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")


def _pos_int(name: str, v, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return v


def _nonneg_float(name: str, v, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'} and finite, got {v}")
    return float(v)


@torch.inference_mode()
def evaluate(model: nn.Module, dataset, batch_size: int = 128) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``dataset``.

    ``dataset`` is a :class:`SyntheticActions`, a ``(clips, labels)`` pair (uint8 clips are
    normalised, float clips are used as they are), or any dataset of ``(clip, label)`` items.
    The model's train/eval mode is restored afterwards.
    """
    batch_size = _pos_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        if isinstance(dataset, SyntheticActions) or isinstance(dataset, tuple):
            clips, labels = (dataset.clips, dataset.labels) if isinstance(dataset, SyntheticActions) else dataset
            if len(clips) != len(labels):
                raise ValueError(f"{len(clips)} clips but {len(labels)} labels")
            labels = torch.as_tensor(labels)
            for a in range(0, len(clips), batch_size):
                x = clips[a:a + batch_size]
                x = normalize(x) if x.dtype == torch.uint8 else x
                correct += int((model(x).argmax(1) == labels[a:a + batch_size]).sum())
                total += len(x)
        elif isinstance(dataset, Dataset):
            for x, y in DataLoader(dataset, batch_size=batch_size):
                x = normalize(x) if x.dtype == torch.uint8 else x
                correct += int((model(x).argmax(1) == y).sum())
                total += len(x)
        else:
            raise TypeError(f"cannot evaluate on {type(dataset).__name__}")
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("empty dataset")
    return correct / total


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(model_name: str = "svformer-tiny", epochs: int | None = None, batch_size: int | None = None,
          lr: float | None = None, seed: int | None = None, out_path: str | os.PathLike | None = None,
          train_size: int | None = None, test_size: int | None = None, *, weight_decay: float = 0.05,
          label_smoothing: float = 0.1, warmup_epochs: float = 1.0, grad_clip: float = 5.0,
          data_seed: int = 0, threads: int | None = 1, progress: bool = True,
          log: Callable[[str], None] | None = None, model: nn.Module | None = None) -> tuple[nn.Module, dict]:
    """Train ``model_name`` from scratch on :class:`SyntheticActions`; returns ``(model, meta)``.

    With ``model`` given, train that (a ``model_name`` model, e.g. a loaded checkpoint: fine-tuning,
    :mod:`golden_model.qat`) in place instead of a freshly initialised one.

    ``None`` arguments take :func:`train_defaults`. AdamW (no decay on biases, norms and PLIF
    ``w``), linear warm-up then cosine decay per step, label smoothing, gradient-norm clipping.
    The test split is evaluated after every epoch. Deterministic for a given ``seed`` and
    ``threads``. ``threads`` sets ``torch.set_num_threads`` during training (1 is fastest on a
    busy machine; ``None`` keeps the current setting). If ``out_path`` is given the checkpoint
    is written there. ``meta`` is the checkpoint dict without ``state_dict``.
    """
    _check_model(model_name)
    d = train_defaults(model_name)
    epochs = _pos_int("epochs", d["epochs"] if epochs is None else epochs)
    batch_size = _pos_int("batch_size", d["batch_size"] if batch_size is None else batch_size)
    lr = _nonneg_float("lr", d["lr"] if lr is None else lr, positive=True)
    seed = _pos_int("seed", d["seed"] if seed is None else seed, 0)
    train_size = _pos_int("train_size", d["train_size"] if train_size is None else train_size)
    test_size = _pos_int("test_size", d["test_size"] if test_size is None else test_size)
    weight_decay = _nonneg_float("weight_decay", weight_decay)
    label_smoothing = _nonneg_float("label_smoothing", label_smoothing)
    if label_smoothing >= 1:
        raise ValueError(f"label_smoothing must be < 1, got {label_smoothing}")
    warmup_epochs = _nonneg_float("warmup_epochs", warmup_epochs)
    grad_clip = _nonneg_float("grad_clip", grad_clip)
    data_seed = _pos_int("data_seed", data_seed, 0)
    if threads is not None:
        threads = _pos_int("threads", threads)
    say = log if log is not None else (lambda s: None)
    from tqdm.auto import tqdm

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    t_start = time.time()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(seed)
        if model is None:
            model = build_model(model_name, num_classes=NUM_CLASSES)
        cfg = model.cfg
        train_ds = SyntheticActions("train", train_size, cfg.frames, cfg.img_size, data_seed)
        test_ds = SyntheticActions("test", test_size, cfg.frames, cfg.img_size, data_seed)
        say(f"{model_name}: {sum(p.numel() for p in model.parameters()):,} parameters; "
            f"data {train_size} train / {test_size} test clips generated in {time.time() - t_start:.1f} s")

        opt = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
        steps_per_epoch = math.ceil(train_size / batch_size)
        total = epochs * steps_per_epoch
        warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)

        def lr_at(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            p = (step - warmup) / max(1, total - warmup)
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * p))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        gen = torch.Generator().manual_seed(seed)
        history = []
        for epoch in range(epochs):
            model.train()
            perm = torch.randperm(train_size, generator=gen)
            seen = correct = 0
            loss_sum = 0.0
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress,
                       leave=False, dynamic_ncols=True)
            for i in bar:
                idx = perm[i * batch_size:(i + 1) * batch_size]
                x, y = train_ds.batch(idx)
                logits = model(x)
                loss = loss_fn(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                sched.step()
                seen += len(y)
                correct += int((logits.argmax(1) == y).sum())
                loss_sum += float(loss.detach()) * len(y)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            bar.close()
            test_acc = evaluate(model, test_ds)
            history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc_running": correct / seen,
                            "test_acc": test_acc})
            say(f"epoch {epoch + 1}/{epochs}: loss {loss_sum / seen:.4f}  train acc (running) "
                f"{correct / seen:.4f}  test acc {test_acc:.4f}  [{time.time() - t_start:.0f} s]")
        train_acc = evaluate(model, train_ds)
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
    model.eval()
    wall = time.time() - t_start
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model": model_name,
        "config": cfg.to_dict(),
        "metrics": {"test_acc": history[-1]["test_acc"], "train_acc": train_acc, "epochs": epochs,
                    "train_size": train_size, "test_size": test_size, "seed": seed,
                    "wall_s": round(wall, 1), "history": history},
        "dataset": {**{k: v for k, v in test_ds.spec().items() if k not in ("split", "size")},
                    "train_size": train_size, "test_size": test_size},
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                  "label_smoothing": label_smoothing, "warmup_epochs": warmup_epochs,
                  "grad_clip": grad_clip, "optimizer": "AdamW", "schedule": "warmup+cosine",
                  "seed": seed, "data_seed": data_seed, "threads": threads},
    }
    say(f"final: test acc {meta['metrics']['test_acc']:.4f}  train acc {train_acc:.4f}  ({wall:.0f} s)")
    if out_path is not None:
        meta["path"] = str(save_checkpoint(model, meta, out_path))
    return model, meta


def save_checkpoint(model: nn.Module, meta: dict, path: str | os.PathLike) -> Path:
    """Write ``meta`` (a checkpoint dict without ``state_dict``) plus the model's weights."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {k: v for k, v in meta.items() if k != "path"}
    ckpt["format"] = CHECKPOINT_FORMAT
    ckpt["state_dict"] = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def _config_class(model_name: str):
    if model_name.startswith("svformer"):
        from .svformer import SVFormerConfig
        return SVFormerConfig
    from .spikevideoformer import SpikeVideoFormerConfig
    return SpikeVideoFormerConfig


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint: ``(model in eval mode, meta)``.

    ``path`` is a file, or a model name with a shipped checkpoint (``"svformer-tiny"``). ``meta``
    is the checkpoint dict without ``state_dict``, plus ``"path"``. Raises
    ``FileNotFoundError`` for a missing file and ``ValueError`` for anything that is not a
    loadable spikevid checkpoint.
    """
    p = Path(path)
    if not p.exists() and isinstance(path, str) and path in MODEL_NAMES:
        p = default_checkpoint(path)
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint file {str(p)!r}")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise ValueError(f"{p}: not a spikevid checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{p}: not a {CHECKPOINT_FORMAT} checkpoint (format {got!r})")
    for key in ("model", "config", "state_dict"):
        if key not in ckpt:
            raise ValueError(f"{p}: checkpoint has no {key!r} entry")
    name = ckpt["model"]
    if name not in MODEL_NAMES:
        raise ValueError(f"{p}: unknown model {name!r}")
    if not isinstance(ckpt["config"], dict):
        raise ValueError(f"{p}: config must be a dict")
    cls = _config_class(name)
    known = {f.name for f in fields(cls)}
    unknown = set(ckpt["config"]) - known
    if unknown:
        raise ValueError(f"{p}: config has unknown fields {sorted(unknown)} for {cls.__name__}")
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["config"].items()}
    model = build_model(name, **cfg)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"{p}: state_dict does not match {name}: {e}") from None
    model.eval()
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    meta["path"] = str(p)
    return model, meta


def test_split(meta: dict, size: int | None = None) -> SyntheticActions:
    """The test split a checkpoint was evaluated on (``size`` clips, default as in training)."""
    ds = meta.get("dataset") if isinstance(meta, dict) else None
    if not isinstance(ds, dict):
        raise ValueError("meta has no 'dataset' entry")
    return SyntheticActions("test", ds["test_size"] if size is None else size, ds["frames"],
                            ds["img_size"], ds["seed"])


test_split.__test__ = False  # not a pytest test
