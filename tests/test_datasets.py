"""Dataset readers (UCF101, NTU RGB+D 60, DVS128 Gesture, Kinetics), clip sampling and ``spikevid eval``.

Every test writes small files in the real formats into a tmp dir (videos with PyAV, an AEDAT 3.1
file byte by byte, the split and label files); nothing is downloaded.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from golden_model.datasets import ClipSampling, CorruptDatasetFile, MissingDatasetFile, open_dataset, read_video
from golden_model.datasets.dvs128 import DVS128Gesture, events_to_frames, read_aedat3
from golden_model.datasets.kinetics import Kinetics
from golden_model.datasets.ntu import NTURGBD60, parse_name
from golden_model.datasets.ucf101 import UCF101
from golden_model.evaluate import Records, accuracy, ensemble

av = pytest.importorskip("av")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run several times faster on one thread on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- writers ------------------------------------------------------------------------------------
def write_video(path: Path, frames: int = 12, w: int = 80, h: int = 64, codec: str = "mpeg4",
                seed: int = 0) -> np.ndarray:
    """A video whose frame ``i`` is uniformly grey ``10 * i`` (+ a per-file colour); returns the frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tint = rng.integers(0, 60, 3)
    data = np.stack([np.broadcast_to(np.clip(10 * i + tint, 0, 255), (h, w, 3)) for i in range(frames)])
    data = data.astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height = w, h
        s.pix_fmt = "yuv420p" if codec != "ffv1" else "yuv444p"
        if codec == "mpeg4":
            s.options = {"qscale": "2"}
        for img in data:
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return data


def write_aedat(path: Path, packets: list[tuple[int, int, list[tuple[int, int, int, int, int]]]],
                header: bytes = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#!END-HEADER\r\n") -> None:
    """AEDAT 3.1: ``packets`` of ``(eventType, tsOverflow, [(x, y, p, t, valid), ...])``."""
    out = bytearray(header)
    for etype, overflow, events in packets:
        out += struct.pack("<hhiiiiii", etype, 1, 8, 4, overflow, len(events), len(events), len(events))
        for x, y, p, t, valid in events:
            out += struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | valid, t)
    path.write_bytes(bytes(out))


# -- sampling -----------------------------------------------------------------------------------
def test_sampling_temporal_positions():
    s = ClipSampling(frames=4, rate=4, crop=32, clips=5)
    assert s.span == 13
    assert [s.start(113, k) for k in range(5)] == [0, 25, 50, 75, 100]        # use_offset, as upstream
    assert [ClipSampling(clips=5, offset=False).start(161, k) for k in range(5)] == [0, 20, 40, 60, 80]
    assert ClipSampling(clips=1).start(161, 0) == 50
    assert s.indices(113, 80) == [80, 84, 88, 92]
    assert s.indices(6, 0) == [0, 4, 5, 5]          # short video: the last frame repeats
    assert all(0 <= s.start(40, None) <= 27 for _ in range(20))
    assert ClipSampling.for_model(type("C", (), {"frames": 4, "img_size": 64})()).crop == 64
    with pytest.raises(ValueError):
        ClipSampling(crops=2)


def test_sampling_views_crops_and_normalisation():
    s = ClipSampling(frames=2, rate=1, crop=4, clips=1, crops=3, mean=0.0, std=1.0)
    video = torch.arange(8, dtype=torch.uint8).view(1, 1, 8, 1).expand(3, 4, 8, 3).contiguous()  # x ramp, 4x8
    v = s.test_views(video)
    assert v.shape == (3, 3, 2, 4, 4)                 # (views, C, T, H, W)
    assert [float(v[i, 0, 0, 0, 0]) * 255 for i in range(3)] == pytest.approx([0, 2, 4])  # left, centre, right
    tall = video.transpose(1, 2).contiguous()            # portrait: crops run top/centre/bottom
    assert s.test_views(tall).shape == (3, 3, 2, 4, 4)
    t = ClipSampling(frames=2, rate=1, crop=4).train_view(video)
    assert t.shape == (3, 2, 4, 4)
    up = ClipSampling(frames=16, rate=4)
    assert up.views == 15 and up.scale_range == (256, 320)


# -- video decoding -----------------------------------------------------------------------------
def test_read_video_roundtrip_and_errors(tmp_path):
    data = write_video(tmp_path / "a.avi", frames=6, codec="ffv1")
    got = read_video(tmp_path / "a.avi")
    assert got.shape == data.shape and np.abs(got.astype(int) - data).max() <= 2
    assert read_video(tmp_path / "a.avi", max_short=32).shape == (6, 32, 40, 3)     # scaled down while decoding
    assert read_video(tmp_path / "a.avi", max_short=100).shape == data.shape        # never up
    with pytest.raises(MissingDatasetFile, match="b.avi"):
        read_video(tmp_path / "b.avi")
    (tmp_path / "bad.mp4").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CorruptDatasetFile, match="bad.mp4") as e:
        read_video(tmp_path / "bad.mp4")
    assert e.value.path == tmp_path / "bad.mp4"


# -- UCF101 -------------------------------------------------------------------------------------
UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]


def make_ucf(root: Path, frames: int = 12) -> Path:
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\r\n" for i, c in enumerate(UCF_CLASSES)))
    train, test = [], []
    for ci, c in enumerate(UCF_CLASSES):
        stem = "HandStandPushups" if c == "HandstandPushups" else c   # the release's own spelling
        for g in (1, 8):
            rel = f"{c}/v_{stem}_g{g:02d}_c01.avi"
            write_video(root / rel, frames, seed=ci * 10 + g)
            (test if g == 1 else train).append(rel)
    (lists / "trainlist01.txt").write_text("".join(f"{r} {UCF_CLASSES.index(r.split('/')[0]) + 1}\r\n" for r in train))
    (lists / "testlist01.txt").write_text("".join(f"{r}\r\n" for r in test))
    return root


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory) -> Path:
    return make_ucf(tmp_path_factory.mktemp("ucf") / "UCF-101")


def test_ucf101_lists_labels_and_views(ucf_root):
    s = ClipSampling(frames=4, rate=2, crop=32, clips=2, crops=3)
    test = UCF101(ucf_root, 1, "test", s)
    assert test.classes == UCF_CLASSES and len(test) == 3
    assert [it.label for it in test.items] == [0, 1, 2]
    assert test.key(1) == "HandstandPushups/v_HandStandPushups_g01_c01.avi"
    views, label = test[2]
    assert views.shape == (6, 3, 4, 32, 32) and label == 2
    train = UCF101(ucf_root, 1, "train", s, seed=0)
    clip, _ = train[0]
    assert clip.shape == (3, 4, 32, 32)
    # the clip's frames are the sampled ones: frame i is grey 10*i (+ tint), clip 1 of 2 starts at 12 - 7 = 5
    first = views[3, :, :, 16, 16] * 0.225 + 0.45          # clip 1, centre crop, centre pixel, all frames
    steps = (first[:, 1:] - first[:, :-1]) * 255
    assert steps.mean().item() == pytest.approx(20, abs=3)
    assert open_dataset(f"ucf101:{ucf_root}", "test", 1, sampling=s).key(0) == test.key(0)


def test_ucf101_errors_name_the_file(tmp_path, ucf_root):
    with pytest.raises(MissingDatasetFile, match="testlist03"):
        UCF101(ucf_root, 3, "test")
    root = make_ucf(tmp_path / "u", frames=3)
    (root / "YoYo" / "v_YoYo_g01_c01.avi").unlink()
    with pytest.raises(MissingDatasetFile, match="v_YoYo_g01_c01.avi"):
        UCF101(root, 1, "test")
    (root / "ucfTrainTestlist" / "trainlist01.txt").write_text("YoYo/v_YoYo_g08_c01.avi 1\n")
    with pytest.raises(CorruptDatasetFile, match="trainlist01.txt.*disagrees"):
        UCF101(root, 1, "train")
    with pytest.raises(ValueError, match="NAME:PATH"):
        open_dataset(str(root))


# -- NTU RGB+D 60 -------------------------------------------------------------------------------
def test_ntu_protocols(tmp_path):
    names = ["S001C001P001R001A001_rgb.avi",   # subject 1 (train in xsub), camera 1 (test in xview)
             "S001C002P003R001A060_rgb.avi",   # subject 3 (test), camera 2 (train)
             "S002C003P038R002A010_rgb.avi",   # subject 38 (train), camera 3 (train)
             "S018C001P008R001A061_rgb.avi",   # NTU-120 action: left out
             "notes.txt"]
    for n in names:
        (tmp_path / "nturgb+d_rgb" / n).parent.mkdir(parents=True, exist_ok=True)
        if n.endswith(".avi"):
            write_video(tmp_path / "nturgb+d_rgb" / n, frames=3)
        else:
            (tmp_path / "nturgb+d_rgb" / n).write_text("x")
    assert parse_name(names[1]) == {"setup": 1, "camera": 2, "subject": 3, "replication": 1, "action": 60}
    s = ClipSampling(frames=2, rate=1, crop=32, clips=1, crops=1)
    xsub_train = NTURGBD60(tmp_path, "xsub", "train", s)
    assert sorted(it.label for it in xsub_train.items) == [0, 9]
    assert [it.label for it in NTURGBD60(tmp_path, "xsub", "test", s).items] == [59]
    assert sorted(it.label for it in NTURGBD60(tmp_path, "xview", "train", s).items) == [9, 59]
    xview_test = NTURGBD60(tmp_path, "xview", "test", s)
    assert [it.label for it in xview_test.items] == [0] and xview_test[0][0].shape == (1, 3, 2, 32, 32)
    assert len(open_dataset(f"ntu60:{tmp_path}", "test", "xview", sampling=s)) == 1
    with pytest.raises(CorruptDatasetFile, match="no NTU"):
        NTURGBD60(tmp_path / "nturgb+d_rgb", "xsub", "test", s, exclude=["S001C002P003R001A060"])


# -- DVS128 Gesture -----------------------------------------------------------------------------
def test_aedat_reader_bit_layout(tmp_path):
    ev = [(127, 0, 1, 10, 1), (3, 127, 0, 20, 1), (5, 6, 1, 30, 0)]          # the last one is invalid
    write_aedat(tmp_path / "a.aedat", [(1, 0, ev), (2, 0, [(1, 1, 1, 5, 1)]), (1, 1, [(9, 8, 0, 7, 1)])])
    e = read_aedat3(tmp_path / "a.aedat")
    assert e["x"].tolist() == [127, 3, 9] and e["y"].tolist() == [0, 127, 8]
    assert e["p"].tolist() == [1, 0, 0]
    assert e["t"].tolist() == [10, 20, (1 << 31) | 7]                          # tsOverflow << 31
    raw = (tmp_path / "a.aedat").read_bytes()
    (tmp_path / "cut.aedat").write_bytes(raw[:-3])
    with pytest.raises(CorruptDatasetFile, match="cut.aedat.*truncated"):
        read_aedat3(tmp_path / "cut.aedat")
    (tmp_path / "v2.aedat").write_bytes(b"#!AER-DAT2.0\r\n" + raw[40:])
    with pytest.raises(CorruptDatasetFile, match="v2.aedat.*AEDAT 3"):
        read_aedat3(tmp_path / "v2.aedat")


def test_event_binning():
    n = 100
    rng = np.random.default_rng(0)
    ev = {"t": np.arange(n, dtype=np.int64) * 10, "x": rng.integers(0, 128, n).astype(np.int16),
          "y": rng.integers(0, 128, n).astype(np.int16), "p": rng.integers(0, 2, n).astype(np.int8)}
    f = events_to_frames(ev, 100, 900, frames=4)                   # events 10..89: 80 events
    assert f.shape == (2, 4, 128, 128) and f.sum() == 80
    assert f.sum((0, 2, 3)).tolist() == [20, 20, 20, 20]           # split by number
    assert f[1].sum() == int(ev["p"][10:90].sum())                 # channel 1 = ON
    g = events_to_frames(ev, 100, 900, frames=4, split_by="time")
    assert g.sum((0, 2, 3)).tolist() == [20, 20, 20, 20]           # uniform rate: the same here
    small = events_to_frames(ev, 100, 900, frames=4, size=32)
    assert small.shape == (2, 4, 32, 32) and float(small.sum()) == pytest.approx(80)
    b = events_to_frames(ev, 0, 1000, frames=2, binary=True, size=64)
    assert set(b.unique().tolist()) <= {0.0, 1.0}


def make_dvs(root: Path) -> Path:
    root.mkdir(parents=True)
    for subset, user in (("test", "user01_fluorescent"), ("train", "user02_led")):
        ev = [(x, (3 * x) % 128, x % 2, 1000 + 10 * x, 1) for x in range(100)]
        write_aedat(root / f"{user}.aedat", [(1, 0, ev)])
        (root / f"{user}_labels.csv").write_text("class,startTime_usec,endTime_usec\n1,1000,1500\n11,1500,2000\n")
        (root / f"trials_to_{subset}.txt").write_text(f"{user}.aedat\n")
    return root


def test_eval_cli_dvs128_int(tmp_path, capsys):
    from golden_model.train import save_checkpoint
    from golden_model.zoo import build_model
    from spikevid.cli import main

    root = make_dvs(tmp_path / "DvsGesture")
    torch.manual_seed(0)
    model = build_model("svformer-dvs128-tiny")
    ckpt = save_checkpoint(model, {"model": "svformer-dvs128-tiny", "config": model.cfg.to_dict()}, tmp_path / "d.pt")
    assert main(["eval", "--checkpoint", str(ckpt), "--data", f"dvs128:{root}", "--int", "--calib", "2",
                 "--out", str(tmp_path / "d.json"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["videos"] == 2 and s["views_per_video"] == 1 and "int" in s and s["energy"]["sops"] >= 0


def test_dvs128_dataset(tmp_path):
    ev = [(x, x, x % 2, 1000 + 10 * x, 1) for x in range(100)]
    write_aedat(tmp_path / "user01_fluorescent.aedat", [(1, 0, ev)])
    (tmp_path / "user01_fluorescent_labels.csv").write_text(
        "class,startTime_usec,endTime_usec\n1,1000,1500\n11,1500,2000\n")
    (tmp_path / "trials_to_test.txt").write_text("user01_fluorescent.aedat\n")
    (tmp_path / "trials_to_train.txt").write_text("user02_led.aedat\n")
    ds = DVS128Gesture(tmp_path, "test", frames=4, size=64)
    assert len(ds) == 2 and [it.label for it in ds.items] == [0, 10] and ds.num_classes == 11
    x, y = ds[1]
    assert x.shape == (1, 2, 4, 64, 64) and y == 10 and float(x.sum()) == pytest.approx(50)
    assert ds.key(1) == "user01_fluorescent.aedat#1"
    with pytest.raises(MissingDatasetFile, match="user02_led.aedat"):
        DVS128Gesture(tmp_path, "train")
    (tmp_path / "user01_fluorescent_labels.csv").write_text("class,startTime_usec,endTime_usec\n12,1,2\n")
    with pytest.raises(CorruptDatasetFile, match="_labels.csv"):
        DVS128Gesture(tmp_path, "test")


# -- Kinetics -----------------------------------------------------------------------------------
def test_kinetics_csv_and_missing(tmp_path):
    rows = [("zumba", "abc", 10, 20, "validate"), ("abseiling", "x-y_z", 0, 10, "validate"),
            ("bowling", "q", 5, 15, "train")]
    (tmp_path / "validate.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                           + "".join(f"{a},{b},{c},{d},{e}\n" for a, b, c, d, e in rows))
    write_video(tmp_path / "videos" / "zumba" / "abc_000010_000020.mp4", frames=4)
    write_video(tmp_path / "videos" / "x-y_z_000000_000010.mp4", frames=4)
    s = ClipSampling(frames=2, rate=1, crop=32, clips=1, crops=1)
    ds = Kinetics(tmp_path / "videos", tmp_path / "validate.csv", "validate", s)
    assert ds.classes == ["abseiling", "bowling", "zumba"]
    assert [it.label for it in ds.items] == [2, 0]
    assert ds[0][0].shape == (1, 3, 2, 32, 32)
    with pytest.raises(MissingDatasetFile, match="q_000005_000015"):
        Kinetics(tmp_path / "videos", tmp_path / "validate.csv", None, s)
    skipped = Kinetics(tmp_path / "videos", tmp_path / "validate.csv", None, s, missing="skip")
    assert skipped.missing == ["q_000005_000015"] and len(skipped) == 2
    got = open_dataset(f"kinetics:{tmp_path / 'videos'}", "test", annotations=tmp_path / "validate.csv", sampling=s)
    assert len(got) == 2
    (tmp_path / "bad.csv").write_text("name,id\nfoo,bar\n")
    with pytest.raises(CorruptDatasetFile, match="bad.csv"):
        Kinetics(tmp_path / "videos", tmp_path / "bad.csv")


# -- model configs ------------------------------------------------------------------------------
def test_named_configs():
    from golden_model.zoo import MODEL_NAMES, build_model, model_config

    assert {"svformer", "svformer-tiny", "spikevideoformer", "spikevideoformer-tiny"} <= set(MODEL_NAMES)
    c = model_config("svformer-dvs128")
    assert (c.in_chans, c.num_classes, c.img_size, c.frames) == (2, 11, 128, 16)
    assert model_config("spikevideoformer-k400").num_classes == 400
    assert model_config("spikevideoformer-ucf101").num_classes == 101
    assert model_config("svformer").num_classes == 101 and model_config("svformer", num_classes=7).num_classes == 7
    m = build_model("svformer-dvs128-tiny").eval()
    with torch.inference_mode():
        assert m(torch.zeros(1, 2, 4, 64, 64)).shape == (1, 11)


# -- evaluation ---------------------------------------------------------------------------------
def test_ensemble_accuracy_and_records(tmp_path):
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.0, 0.9, 0.1]])
    assert ensemble(probs, k=2)[0] == [1, 0]                      # mean (0.3, 0.6, 0.1)
    rows = [{"key": "a", "label": 1, "float": {"top5": [1, 0]}}, {"key": "b", "label": 0, "float": {"top5": [1, 0]}}]
    acc = accuracy(rows, "float")
    assert (acc.top1, acc.top5) == (0.5, 1.0) and accuracy(rows, "int") is None
    rec = Records(tmp_path / "r.jsonl", {"model": "m"})
    rec.append(rows[0])
    with open(tmp_path / "r.jsonl", "a") as f:
        f.write('{"key": "b", "lab')                               # an interrupted write
    again = Records(tmp_path / "r.jsonl", {"model": "m"})
    assert again.done == {"a"}
    with pytest.raises(ValueError, match="another setup"):
        Records(tmp_path / "r.jsonl", {"model": "other"})


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    from golden_model.train import save_checkpoint
    from golden_model.zoo import build_model

    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = build_model("svformer-tiny", num_classes=len(UCF_CLASSES))
    ours = save_checkpoint(model, {"model": "svformer-tiny", "config": model.cfg.to_dict()}, d / "ours.pt")
    torch.save({"model_state": {f"module.{k}": v for k, v in model.state_dict().items()}}, d / "up.pyth")
    return ours, d / "up.pyth"


def test_eval_cli_float_int_resume(tmp_path, ucf_root, tiny_checkpoints, capsys):
    from spikevid.cli import main

    ours, upstream = tiny_checkpoints
    out = tmp_path / "res.json"
    base = ["eval", "--checkpoint", str(ours), "--data", f"ucf101:{ucf_root}", "--split", "1", "--rate", "2",
            "--clips", "2", "--crops", "1", "--out", str(out), "--json"]
    assert main([*base, "--int", "--calib", "2", "--limit", "2"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["videos"] == 2 and s["views_per_video"] == 2 and s["calibration_clips"] == 2
    assert {"float", "int", "energy"} <= set(s) and 0 <= s["int"]["top1"] <= 1
    lines = (tmp_path / "res.jsonl").read_text().splitlines()
    assert len(lines) == 3                                        # setup + 2 videos
    assert main([*base, "--int", "--calib", "2"]) == 0            # resumes: only the third video is new
    s = json.loads(capsys.readouterr().out)
    assert s["videos"] == 3 and len((tmp_path / "res.jsonl").read_text().splitlines()) == 4
    assert main([*base]) == 2                                     # another setup on the same records
    assert "another setup" in capsys.readouterr().err
    # the same weights as an upstream .pyth give the same float predictions
    out2 = tmp_path / "up.json"
    assert main(["eval", "--model", "svformer-tiny", "--checkpoint", str(upstream), "--data", f"ucf101:{ucf_root}",
                 "--rate", "2", "--clips", "2", "--crops", "1", "--out", str(out2), "--json"]) == 0
    s2 = json.loads(capsys.readouterr().out)
    assert s2["checkpoint_source"] == "upstream" and s2["float"] == s["float"]
    assert main(["eval", "--checkpoint", str(upstream), "--data", f"ucf101:{ucf_root}", "--out", str(out2)]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["eval", "--model", "svformer-tiny", "--checkpoint", str(upstream),
                 "--data", f"dvs128:{tmp_path}"]) == 2
    assert "svformer-dvs128" in capsys.readouterr().err
    assert main(["eval", "--model", "svformer", "--checkpoint", str(upstream), "--data", f"ucf101:{ucf_root}",
                 "--transport", "emulator"]) == 2
    assert "does not fit the accelerator" in capsys.readouterr().err


def test_eval_cli_kinetics_calib_data(tmp_path, tiny_checkpoints, capsys):
    from spikevid.cli import main

    head = "label,youtube_id,time_start,time_end,split\n"
    for split, ids in (("validate", ("a", "b")), ("train", ("c", "d"))):
        rows = [(c, f"{i}{k}", 0, 10) for k, c in enumerate(("abseiling", "bowling", "zumba")) for i in ids]
        (tmp_path / f"{split}.csv").write_text(head + "".join(f"{c},{y},{s},{e},{split}\n" for c, y, s, e in rows))
        for _, y, s, e in rows:
            write_video(tmp_path / split / f"{y}_{s:06d}_{e:06d}.mp4", frames=5, seed=len(y))
    ours, _ = tiny_checkpoints
    assert main(["eval", "--checkpoint", str(ours), "--data", f"kinetics:{tmp_path / 'validate'}", "--annotations",
                 str(tmp_path / "validate.csv"), "--calib-data", f"kinetics:{tmp_path / 'train'}",
                 "--calib-annotations", str(tmp_path / "train.csv"), "--int", "--calib", "3", "--rate", "1",
                 "--clips", "1", "--crops", "1", "--out", str(tmp_path / "k.json"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["videos"] == 6 and s["calibration_clips"] == 3 and "int" in s


def test_eval_cli_transport_emulator(tmp_path, ucf_root, tiny_checkpoints, capsys):
    from spikevid.cli import main

    ours, _ = tiny_checkpoints
    assert main(["eval", "--checkpoint", str(ours), "--data", f"ucf101:{ucf_root}", "--rate", "2", "--clips", "1",
                 "--crops", "1", "--limit", "1", "--calib", "1", "--transport", "emulator",
                 "--out", str(tmp_path / "e.json"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["device_equal_golden"] is True and s["device"] == s["int"]
