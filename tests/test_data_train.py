"""Synthetic action dataset, training loop, checkpoints and ``spikevid train``."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from golden_model import data
from golden_model.data import CLASSES, SyntheticActions, generate, normalize, render, sample_params
from golden_model.train import (
    CHECKPOINT_FORMAT,
    default_checkpoint,
    evaluate,
    load_checkpoint,
    save_checkpoint,
    test_split,
    train,
)
from golden_model.zoo import build_model


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a small, busy machine two threads are many times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ----------------------------------------------------------------------------- dataset


def test_determinism_and_prefix():
    a, la = generate("test", range(12))
    b, lb = generate("test", range(12))
    assert torch.equal(a, b) and torch.equal(la, lb)
    # clip i depends on (seed, split, i) only: a dataset is a prefix of a bigger one, any order
    ds = SyntheticActions("test", size=30)
    assert torch.equal(ds.clips[:12], a)
    c, _ = generate("test", [11, 3])
    assert torch.equal(c, a[[11, 3]])


def test_splits_and_seeds_differ():
    tr, ltr = generate("train", range(20))
    te, lte = generate("test", range(20))
    other, _ = generate("test", range(20), seed=1)
    assert torch.equal(ltr, lte)  # labels are i % 10 in every split
    for x in (tr, other):
        assert not any(torch.equal(x[i], te[j]) for i in range(20) for j in range(20))


def test_shapes_dtypes_and_normalize():
    ds = SyntheticActions("train", size=20, frames=4, img_size=64)
    assert ds.clips.shape == (20, 3, 4, 64, 64) and ds.clips.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and len(ds) == 20
    x, y = ds[3]
    assert x.shape == (3, 4, 64, 64) and x.dtype == torch.float32 and isinstance(y, int) and y == 3
    torch.testing.assert_close(x, (ds.clips[3].float() / 255 - 0.45) / 0.225)
    xb, yb = ds.batch(slice(0, 5))
    assert xb.shape == (5, 3, 4, 64, 64) and torch.equal(yb, ds.labels[:5])
    assert torch.equal(ds.raw(2), ds.clips[2])
    # other sizes work (lengths scale with img_size / 64)
    odd, _ = generate("train", range(3), frames=7, img_size=32)
    assert odd.shape == (3, 3, 7, 32, 32)
    # cached: a second dataset with the same arguments shares the tensor
    assert SyntheticActions("train", size=20).clips is ds.clips


def test_classes_present_and_balanced():
    assert len(CLASSES) == 10 == len(set(CLASSES))
    ds = SyntheticActions("test", size=200)
    assert torch.bincount(ds.labels, minlength=10).tolist() == [20] * 10
    assert build_model("svformer-tiny").cfg.num_classes == len(CLASSES)


def test_first_frame_carries_no_class_information():
    """All nuisance parameters are drawn independently of the label, and the first frame
    depends on them only: rendering the same clip as every class gives the same first frame,
    while the later frames differ between every pair of classes."""
    params = sample_params("test", range(8))
    clips = [render(params, [k] * 8) for k in range(len(CLASSES))]
    for k in range(1, len(CLASSES)):
        assert torch.equal(clips[k][:, :, 0], clips[0][:, :, 0])
    for i in range(len(CLASSES)):
        for j in range(i + 1, len(CLASSES)):
            diff = (clips[i][:, :, 1:].int() - clips[j][:, :, 1:].int()).abs()
            assert (diff.flatten(1) > 40).sum(1).min() > 0, (CLASSES[i], CLASSES[j])


def _clean(n: int = 8, shape: int | None = None):
    """Noise-free, jitter-free, flicker-free parameters of n clips starting near the centre (so
    that no motion leaves the frame; the dataset itself lets shapes cross the border)."""
    p = sample_params("train", range(n), frames=4, img_size=64)
    p = replace(p, noise_std=np.zeros(n), jitter=np.zeros_like(p.jitter), flicker=np.ones_like(p.flicker),
                center=28 + (p.center - 16) / 4)
    if shape is not None:
        p = replace(p, shape=np.full(n, shape))
    return p


def _moments(clips: torch.Tensor, params) -> tuple[torch.Tensor, ...]:
    """Area, centroid and orientation (image coordinates) of the shape in each frame."""
    bg = torch.as_tensor(params.bg, dtype=torch.float32).view(-1, 3, 1, 1, 1)
    m = ((clips.float() - bg).abs().sum(1) > 60).float()  # (N, T, S, S)
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    area = m.sum((-2, -1))
    cx = (m * xs).sum((-2, -1)) / area.clamp(min=1)
    cy = (m * ys).sum((-2, -1)) / area.clamp(min=1)
    dx, dy = xs - cx[..., None, None], ys - cy[..., None, None]
    mu20, mu02, mu11 = (m * dx * dx).sum((-2, -1)), (m * dy * dy).sum((-2, -1)), (m * dx * dy).sum((-2, -1))
    theta = 0.5 * torch.atan2(2 * mu11, mu20 - mu02)
    return area, cx, cy, theta


@pytest.mark.parametrize("cls", CLASSES)
def test_each_class_moves_as_named(cls):
    k = CLASSES.index(cls)
    p = _clean(shape=0)  # bars: orientation is well defined
    area, cx, cy, theta = _moments(render(p, [k] * 8), p)
    last = 2 if cls in ("blink", "shake") else -1  # frame 2: back to the start (shown, unshaken)
    dxs, dys = cx[:, last] - cx[:, 0], cy[:, last] - cy[:, 0]
    dtheta = torch.remainder(theta[:, last] - theta[:, 0] + math.pi / 2, math.pi) - math.pi / 2
    ratio = area[:, last] / area[:, 0]
    moves = {"move_right": (dxs > 8), "move_left": (dxs < -8), "move_down": (dys > 8), "move_up": (dys < -8)}
    if cls in moves:
        assert moves[cls].all()
    else:
        assert (dxs.abs() < 2).all() and (dys.abs() < 2).all()
    if cls == "shake":  # out and back every frame
        step = torch.hypot(cx[:, 1] - cx[:, 0], cy[:, 1] - cy[:, 0])
        assert (step > 4).all() and (torch.hypot(cx[:, 3] - cx[:, 1], cy[:, 3] - cy[:, 1]) < 1).all()
    if cls == "rotate":  # 60-110 degrees either way; a bar's orientation is defined modulo 180
        assert (dtheta.abs() > math.radians(35)).all()
    else:
        assert (dtheta.abs() < math.radians(5)).all()
    if cls == "grow":
        assert (ratio > 2).all()
    elif cls == "shrink":
        assert (ratio < 0.5).all()
    elif cls == "blink":
        assert (area[:, 1] == 0).all() and (area[:, 3] == 0).all() and (area[:, 2] > 0).all()
    else:
        assert ((ratio > 0.8) & (ratio < 1.25)).all()


@pytest.mark.parametrize("kwargs, exc", [
    ({"split": "val"}, ValueError),
    ({"size": 0}, ValueError),
    ({"size": 2.5}, TypeError),
    ({"size": True}, TypeError),
    ({"frames": 1}, ValueError),
    ({"img_size": 8}, ValueError),
    ({"seed": -1}, ValueError),
    ({"seed": "0"}, TypeError),
])
def test_bad_dataset_arguments(kwargs, exc):
    args = {"split": "train", "size": 10, **kwargs}
    with pytest.raises(exc):
        SyntheticActions(**args)


def test_bad_generate_and_normalize_arguments():
    with pytest.raises(ValueError):
        generate("test", [])
    with pytest.raises(ValueError):
        generate("test", [-1])
    with pytest.raises(ValueError):
        render(sample_params("test", range(2)), [0, 10])
    with pytest.raises(ValueError):
        render(sample_params("test", range(2)), [0])
    with pytest.raises(TypeError):
        normalize(torch.zeros(3, 4, 8, 8))
    ds = SyntheticActions("test", size=10)
    with pytest.raises(IndexError):
        ds[10]
    assert data.label_of(23) == 3


# ----------------------------------------------------------------------------- training


def test_training_steps_reduce_loss():
    torch.manual_seed(0)
    model = build_model("svformer-tiny")
    x, y = SyntheticActions("train", size=20).batch(slice(0, 20))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.1, losses


def test_train_is_deterministic_and_round_trips(tmp_path):
    kw = dict(epochs=1, batch_size=10, train_size=20, test_size=10, seed=3, progress=False)
    m1, meta1 = train("svformer-tiny", out_path=tmp_path / "a.pt", **kw)
    m2, _ = train("svformer-tiny", **kw)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    model, meta = load_checkpoint(tmp_path / "a.pt")
    assert meta["format"] == CHECKPOINT_FORMAT and meta["model"] == "svformer-tiny"
    assert meta["metrics"]["epochs"] == 1 and meta["metrics"]["train_size"] == 20
    assert meta["metrics"]["test_size"] == 10 and meta["metrics"]["seed"] == 3
    assert 0.0 <= meta["metrics"]["test_acc"] <= 1.0 and "state_dict" not in meta
    x = SyntheticActions("test", size=10).batch(slice(0, 4))[0]
    with torch.inference_mode():
        assert torch.equal(model(x), m1.eval()(x))
    assert evaluate(model, test_split(meta)) == meta["metrics"]["test_acc"]
    with pytest.raises(ValueError):
        train("svformer-tiny", epochs=0, progress=False)
    with pytest.raises(ValueError):
        train("nope", progress=False)
    with pytest.raises(TypeError):
        train("svformer-tiny", batch_size=2.0, progress=False)


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="not a spikevid checkpoint"):
        load_checkpoint(junk)
    wrong = tmp_path / "wrong.pt"
    torch.save({"format": "something-else", "state_dict": {}}, wrong)
    with pytest.raises(ValueError, match="format"):
        load_checkpoint(wrong)
    model = build_model("svformer-tiny")
    meta = {"model": "svformer-tiny", "config": model.cfg.to_dict()}
    good = save_checkpoint(model, meta, tmp_path / "good.pt")
    load_checkpoint(good)
    ck = torch.load(good, weights_only=True)
    ck["config"]["embed_dim"] = [8, 16, 32, 64]
    torch.save(ck, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="state_dict"):
        load_checkpoint(tmp_path / "mismatch.pt")
    ck["config"]["bogus"] = 1
    torch.save(ck, tmp_path / "bogus.pt")
    with pytest.raises(ValueError, match="unknown fields"):
        load_checkpoint(tmp_path / "bogus.pt")
    with pytest.raises(ValueError):
        default_checkpoint("resnet")


# ----------------------------------------------------------------------------- shipped checkpoints


SHIPPED = [n for n in ("svformer-tiny", "spikevideoformer-tiny") if default_checkpoint(n).exists()]


def test_svformer_tiny_is_shipped():
    assert "svformer-tiny" in SHIPPED
    assert default_checkpoint("svformer-tiny").stat().st_size < 2_000_000


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_accuracy(name):
    model, meta = load_checkpoint(name)  # a model name finds the shipped file
    assert meta["model"] == name and not model.training
    assert meta["metrics"]["test_acc"] >= 0.90 and meta["metrics"]["test_size"] >= 500
    assert meta["dataset"]["classes"] == list(CLASSES)
    test = test_split(meta, size=200)
    assert evaluate(model, test) >= 0.90


# ----------------------------------------------------------------------------- CLI


def test_cli_train_json(tmp_path, capsys):
    from spikevid.cli import main

    out = tmp_path / "cli.pt"
    rc = main(["train", "--model", "svformer-tiny", "--epochs", "1", "--batch-size", "10",
               "--train-size", "20", "--test-size", "10", "--out", str(out), "--json", "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "svformer-tiny" and summary["checkpoint"] == str(out)
    assert summary["epochs"] == 1 and 0 <= summary["test_acc"] <= 1
    load_checkpoint(out)
    rc = main(["train", "--epochs", "0", "--out", str(tmp_path / "x.pt"), "--quiet"])
    assert rc == 2 and "epochs" in capsys.readouterr().err
