"""Upstream checkpoint loading (golden_model.checkpoints) and name/shape parity with upstream."""

from __future__ import annotations

import pytest
import torch

from golden_model.checkpoints import (
    CheckpointMismatch,
    LoadReport,
    extract_state_dict,
    load_upstream,
    upstream_param_table,
    upstream_table_path,
)
from golden_model.svformer import SVFormer, SVFormerConfig


def _table(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def _meta(build):
    with torch.device("meta"):
        return build()


@pytest.fixture(scope="module")
def svformer_full() -> SVFormer:
    torch.manual_seed(0)
    return SVFormer(SVFormerConfig.full())


def _fake_upstream(table, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random tensors named and shaped as upstream's table (``num_batches_tracked`` int64)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in table:
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.randint(0, 1000, shape, generator=g, dtype=torch.long)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[name] = torch.randn(shape, generator=g)
    return sd


def test_svformer_names_and_shapes_equal_upstream(svformer_full):
    table = upstream_param_table("svformer")
    ours = _table(svformer_full)
    assert ours == table  # same names, shapes and order (parameters and buffers)
    assert len(table) == 247
    n_params = sum(torch.Size(s).numel() for n, s in table
                   if not n.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert n_params == 13_801_612


def test_spikevideoformer_names_and_shapes_equal_upstream():
    path = upstream_table_path("spikevideoformer")
    if not path.exists():  # the table is committed with the SpikeVideoFormer fidelity check
        pytest.fail(f"{path} is missing")
    from golden_model.spikevideoformer import SpikeVideoFormer, SpikeVideoFormerConfig

    table = upstream_param_table("spikevideoformer")
    ours = _table(_meta(lambda: SpikeVideoFormer(SpikeVideoFormerConfig.full(num_classes=1000))))
    assert ours == table


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown model family"):
        upstream_param_table("resnet")


def test_fake_pyth_loads_exactly(tmp_path, svformer_full):
    sd = _fake_upstream(upstream_param_table("svformer"))
    path = tmp_path / "svformer_ucf101.pyth"
    torch.save({"model_state": sd, "optimizer_state": {}, "epoch": 200, "cfg": "MODEL:\n  NUM_CLASSES: 101\n"},
               path)
    report = load_upstream(svformer_full, path)
    assert isinstance(report, LoadReport) and report.complete
    assert "model_state" in report.source
    assert report.loaded == list(sd)
    got = svformer_full.state_dict()
    for k, v in sd.items():
        assert torch.equal(got[k], v), k


def test_spikevideoformer_pth_model_key_and_raw(tmp_path):
    from golden_model.spikevideoformer import SpikeVideoFormer, SpikeVideoFormerConfig

    model = SpikeVideoFormer(SpikeVideoFormerConfig.tiny())
    sd = _fake_upstream(_table(model), seed=2)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": sd, "epoch": 3}, path)
    report = load_upstream(model, path)
    assert report.complete and "(model)" in report.source
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    report = load_upstream(model, {k: v + 1 for k, v in sd.items()})
    assert "(raw)" in report.source
    assert torch.equal(model.state_dict()["head.weight"], sd["head.weight"] + 1)


def _small() -> SVFormer:
    torch.manual_seed(0)
    return SVFormer(SVFormerConfig.tiny())


def test_module_prefix_is_stripped():
    model = _small()
    sd = _fake_upstream(_table(model), seed=3)
    report = load_upstream(model, {"model_state": {"module." + k: v for k, v in sd.items()}})
    assert report.stripped_prefix == "module."
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


def test_missing_key_raises():
    model = _small()
    sd = _fake_upstream(_table(model))
    del sd["blocks3.0.attn.q_lif.w"]
    with pytest.raises(CheckpointMismatch, match=r"blocks3\.0\.attn\.q_lif\.w") as e:
        load_upstream(model, sd)
    assert e.value.missing == ["blocks3.0.attn.q_lif.w"] and not e.value.unexpected
    assert isinstance(e.value, ValueError)


def test_extra_key_raises():
    model = _small()
    sd = _fake_upstream(_table(model))
    sd["blocks1.0.pos_embed.weight"] = torch.zeros(16, 1, 3, 3)
    with pytest.raises(CheckpointMismatch, match=r"blocks1\.0\.pos_embed\.weight") as e:
        load_upstream(model, sd)
    assert e.value.unexpected == ["blocks1.0.pos_embed.weight"] and not e.value.missing


def test_wrong_shape_raises_and_nothing_is_loaded():
    model = _small()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = _fake_upstream(_table(model))
    sd["lpBN.running_mean"] = torch.zeros(64 * 16)  # built for TN=16 instead of 4
    with pytest.raises(CheckpointMismatch, match=r"lpBN\.running_mean: expected \[256\] vs got \[1024\]") as e:
        load_upstream(model, sd)
    assert e.value.mismatched == [("lpBN.running_mean", (256,), (1024,))]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_non_strict_loads_the_rest_and_reports():
    model = SVFormer(SVFormerConfig.tiny(num_classes=7))
    sd = _fake_upstream(_table(SVFormer(SVFormerConfig.tiny(num_classes=10))))
    sd["extra.bias"] = torch.zeros(3)
    report = load_upstream(model, {"model_state": sd}, strict=False)
    assert {n for n, _, _ in report.mismatched} == {"head.weight", "head.bias"}
    assert ("head.weight", (7, 128), (10, 128)) in report.mismatched
    assert report.unexpected == ["extra.bias"] and report.missing == []
    assert not report.complete
    got = model.state_dict()
    assert all(torch.equal(got[k], sd[k]) for k in report.loaded)
    assert len(report.loaded) == len(got) - 2
    with pytest.raises(CheckpointMismatch, match="another number of classes"):
        load_upstream(model, sd)


def test_ignore_prefix_is_reported():
    model = _small()
    sd = _fake_upstream(_table(model))
    sd["head_kd.weight"] = torch.zeros(10, 128)
    with pytest.raises(CheckpointMismatch, match="head_kd"):
        load_upstream(model, sd)
    report = load_upstream(model, sd, ignore=("head_kd.",))
    assert report.ignored == ["head_kd.weight"] and report.complete


def test_not_a_state_dict():
    with pytest.raises(ValueError, match="not a state dict"):
        extract_state_dict({"epoch": 3, "cfg": "x"})
    with pytest.raises(TypeError):
        extract_state_dict([1, 2])


def test_pickled_training_args_need_weights_only_false(tmp_path):
    import argparse

    model = _small()
    sd = _fake_upstream(_table(model), seed=4)
    path = tmp_path / "checkpoint-best.pth"
    torch.save({"model": sd, "args": argparse.Namespace(model="metaspikformer_8_512")}, path)
    with pytest.raises(ValueError, match="weights_only=False"):
        load_upstream(model, path)
    assert load_upstream(model, path, weights_only=False).complete
    assert torch.equal(model.state_dict()["head.weight"], sd["head.weight"])
