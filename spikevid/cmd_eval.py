"""``spikevid eval``: top-1 / top-5 of a checkpoint on a real dataset, float and integer (and device).

Views per video are ensembled by averaging their softmax probabilities (``golden_model.evaluate``).
Per-video results are appended to ``<out>.jsonl`` as they are made, so an interrupted run resumes
where it stopped; the summary (accuracies, agreement, energy of one clip) goes to ``--out``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from spikevid.cmd_run import TRANSPORTS


def register(sub) -> None:
    from golden_model.datasets import DATASETS
    from golden_model.zoo import MODEL_NAMES

    p = sub.add_parser("eval", help="accuracy of a checkpoint on UCF101 / NTU60 / DVS128 Gesture / Kinetics",
                       description=__doc__)
    p.add_argument("--model", choices=MODEL_NAMES, help="model of an upstream checkpoint (a spikevid checkpoint "
                   "names its own model)")
    p.add_argument("--checkpoint", required=True, help="spikevid checkpoint, upstream .pyth/.pth, or a shipped "
                   "tiny model name")
    p.add_argument("--data", required=True, metavar="NAME:PATH", help=f"dataset, NAME one of {', '.join(DATASETS)}")
    p.add_argument("--split", default=None, help="UCF101 fold 1-3 (default 1); NTU protocol xsub (default) or xview")
    p.add_argument("--annotations", metavar="PATH", help="UCF101 ucfTrainTestlist folder or Kinetics csv "
                   "(default: found beside the data)")
    p.add_argument("--skip-missing", action="store_true", help="Kinetics: leave out videos the csv lists but "
                   "the folder lacks")
    p.add_argument("--int", action="store_true", help="also run the bit-accurate integer model")
    p.add_argument("--calib", type=int, default=16, help="calibration clips for --int from the train subset "
                   "(default 16: videos spread over the train list, centre view each)")
    p.add_argument("--calib-data", metavar="NAME:PATH", help="where the train subset for calibration is "
                   "(default: --data), e.g. the Kinetics train videos")
    p.add_argument("--calib-annotations", metavar="PATH", help="annotations of --calib-data (default: --annotations "
                   "when --calib-data is not given)")
    p.add_argument("--transport", choices=TRANSPORTS, help="also run the integer model through the accelerator "
                   "protocol (tiny models only); implies --int")
    p.add_argument("--port", help="serial port (--transport serial)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--limit", type=int, help="evaluate N videos spread evenly over the test list")
    p.add_argument("--frames", type=int, help="frames per clip (default: the model's)")
    p.add_argument("--rate", type=int, default=4, help="sampling rate, decoded frames (default 4)")
    p.add_argument("--crop", type=int, help="crop side (default: the model's img_size)")
    p.add_argument("--clips", type=int, default=5, help="test clips per video (default 5)")
    p.add_argument("--crops", type=int, default=3, choices=(1, 3), help="test crops per clip (default 3)")
    p.add_argument("--dvs-binary", action="store_true", help="DVS128: 0/1 frames instead of event counts")
    p.add_argument("--dvs-split-by", choices=("number", "time"), default="number")
    p.add_argument("--batch", type=int, default=16, help="views per forward pass")
    p.add_argument("--workers", type=int, default=0, help="decoding worker processes")
    p.add_argument("--trust-checkpoint", action="store_true", help="let torch.load unpickle non-tensor objects")
    p.add_argument("--out", type=Path, help="summary JSON (default runs/eval/<dataset>-<model>.json); per-video "
                   "records in <out>.jsonl")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=eval_cmd)


def _softmax_views(model, views: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(views[lo:lo + batch]).double().softmax(1) for lo in range(0, len(views), batch)])


def _int_logits(int_model, views: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([int_model(int_model.quantize_clip(views[lo:lo + batch]))
                          for lo in range(0, len(views), batch)])


def eval_cmd(args) -> int:
    from tqdm import tqdm

    from golden_model.datasets import ClipSampling, open_dataset, parse_spec
    from golden_model.evaluate import Records, accuracy, calibration_clips, ensemble, load_model
    from golden_model.zoo import model_config

    for name in ("limit", "calib", "batch", "frames", "crop", "rate", "clips"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name} must be >= 1, got {v}")
    if args.workers < 0:
        raise ValueError("--workers must be >= 0")
    use_int = args.int or args.transport is not None
    dname, root = parse_spec(args.data)
    if args.model is not None:
        _check_channels(model_config(args.model).in_chans, args.model, dname)
        _check_fits(args.model, args.transport)
    listing = dict(split=args.split, annotations=args.annotations, skip_missing=args.skip_missing)
    classes = open_dataset(args.data, "test", **listing).num_classes    # the head an upstream model gets
    model, meta = load_model(args.checkpoint, args.model, classes, trust=args.trust_checkpoint)
    cfg = model.cfg
    mname = meta.get("model", args.model)
    _check_channels(cfg.in_chans, mname, dname)
    _check_fits(mname, args.transport)
    sampling = ClipSampling.for_model(cfg, rate=args.rate, clips=args.clips, crops=args.crops,
                                      **({"frames": args.frames} if args.frames else {}),
                                      **({"crop": args.crop} if args.crop else {}))
    opts = dict(listing, sampling=sampling, dvs_binary=args.dvs_binary, dvs_split_by=args.dvs_split_by)
    test = open_dataset(args.data, "test", **opts)
    if test.num_classes != cfg.num_classes:
        raise ValueError(f"{dname} has {test.num_classes} classes, the model's head {cfg.num_classes}")
    order = list(range(len(test)))
    if args.limit:
        from golden_model.datasets.common import spread
        order = spread(len(test), args.limit)
    views_per_video = 1 if dname == "dvs128" else sampling.views
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    out = args.out or Path("runs/eval") / f"{dname}-{mname}.json"
    split = args.split or {"ucf101": "1", "ntu60": "xsub"}.get(dname)
    calib_setup = [args.calib, args.calib_data, args.calib_annotations] if use_int else None
    setup = {"model": mname, "checkpoint": str(args.checkpoint), "data": args.data, "split": split,
             "annotations": args.annotations, "sampling": sampling.to_dict(), "int": use_int, "calib": calib_setup,
             "transport": args.transport, "dvs": [args.dvs_binary, args.dvs_split_by] if dname == "dvs128" else None}
    records = Records(out.with_name(out.name + "l") if out.suffix == ".json" else out.with_suffix(".jsonl"), setup)

    todo = [i for i in order if test.key(i) not in records.done]
    say(f"{mname} on {dname} ({len(order)} test videos, {views_per_video} views each; "
        f"{len(order) - len(todo)} already in {records.path})")
    int_model, program, device, calib = None, None, None, None
    if use_int and todo:
        from golden_model.pipeline import quantize
        calib_spec = args.calib_data or args.data
        if parse_spec(calib_spec)[0] != dname:
            raise ValueError(f"--calib-data must be a {dname} dataset, got {calib_spec!r}")
        train_ann = args.calib_annotations if (args.calib_data or args.calib_annotations) else args.annotations
        train = open_dataset(calib_spec, "train", **(opts | {"annotations": train_ann}))
        calib = min(args.calib, len(train))
        say(f"calibrating the integer model on {calib} clips of the {dname} train subset ...")
        with torch.inference_mode():
            int_model = quantize(model, calibration_clips(train, args.calib))
    if args.transport is not None and todo:
        from driver.program import compile_model
        from spikevid.cmd_run import open_device
        device = open_device(args)
        try:
            program = compile_model(int_model, device.info())
        except ValueError as e:
            device.close()
            raise ValueError(f"{mname} does not fit the accelerator (only the tiny models do): {e}") from None

    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(test, todo), batch_size=None,
                                         num_workers=args.workers)
    try:
        for i, (views, label) in zip(todo, tqdm(loader, total=len(todo), desc=f"eval {dname}", unit="video",
                                                 disable=args.json or not todo), strict=True):
            row = {"key": test.key(i), "label": int(label), "views": int(views.shape[0])}
            top, p = ensemble(_softmax_views(model, views, args.batch))
            row["float"] = {"top5": top, "p": p}
            if int_model is not None:
                logits = _int_logits(int_model, views, args.batch)
                top, p = ensemble(int_model.logits_float(logits).softmax(1))
                row["int"] = {"top5": top, "p": p}
            if program is not None:
                from driver.run import run
                res = run(program, int_model.quantize_clip(views), device, progress=False)
                top, p = ensemble(int_model.logits_float(res.logits).softmax(1))
                row["device"] = {"top5": top, "p": p, "equal_golden": bool(torch.equal(res.logits, logits))}
            records.append(row)
    finally:
        if device is not None:
            device.close()

    keys = {test.key(i) for i in order}
    rows = [r for r in records.rows if r["key"] in keys]
    summary = {"model": mname, "checkpoint": str(args.checkpoint), "checkpoint_source": meta.get("source"),
               "dataset": dname, "split": split, "videos": len(rows), "views_per_video": views_per_video,
               "ensemble": "mean of softmax probabilities over the views", "sampling": sampling.to_dict(),
               "records": str(records.path)}
    for path in ("float", "int", "device"):
        acc = accuracy(rows, path)
        if acc is not None:
            summary[path] = acc.to_dict()
    if use_int:
        summary["calibration_clips"] = calib if calib is not None else args.calib
        if int_model is not None:
            summary["int_residual_frac_bits"] = int_model.frac_bits
        summary["agreement_top1"] = sum(r["float"]["top5"][0] == r["int"]["top5"][0] for r in rows) / max(len(rows), 1)
    if args.transport is not None:
        summary["device_equal_golden"] = all(r["device"]["equal_golden"] for r in rows)
    report = _energy(model, test, order[0], mname, dname) if order else None
    if report is not None:
        summary["energy"] = report.totals()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    status = 1 if summary.get("device_equal_golden") is False else 0   # as `spikevid run`: the device differs
    if args.json:
        print(json.dumps(summary, indent=2))
        return status
    print(f"\n{mname} on {dname}: {len(rows)} videos x {views_per_video} views (softmax averaged over views)")
    for path, label in (("float", "float model"), ("int", "integer model"), ("device", f"via {args.transport}")):
        if path in summary:
            a = summary[path]
            print(f"  {label:14s} top-1 {100 * a['top1']:6.2f} %   top-5 {100 * a['top5']:6.2f} %")
    if "agreement_top1" in summary:
        print(f"  float/int top-1 agreement {100 * summary['agreement_top1']:.2f} %  "
              f"({summary['calibration_clips']} calibration clips from the train subset)")
    if "device_equal_golden" in summary:
        print(f"  device logits equal the golden integer model's on every video: {summary['device_equal_golden']}")
    if report is not None:
        print()
        print(report.format_table())
    print(f"\nwrote {out} (per-video records: {records.path})")
    return status


def _check_channels(in_chans: int, mname: str, dname: str) -> None:
    want = 2 if dname == "dvs128" else 3
    if in_chans != want:
        raise ValueError(f"{mname} takes {in_chans} input channels; {dname} clips have {want}"
                         + (" (use --model svformer-dvs128)" if dname == "dvs128" else ""))


def _check_fits(mname: str, transport: str | None) -> None:
    if transport is not None and not mname.endswith("-tiny"):
        raise ValueError(f"{mname} does not fit the accelerator: --transport runs only the tiny models "
                         "(svformer-tiny, spikevideoformer-tiny, svformer-dvs128-tiny)")


def _energy(model, test, index: int, mname: str, dname: str):
    """Energy report of the first view of video ``index``."""
    from golden_model.energy import profile_clip

    views, _ = test[index]
    return profile_clip(model, views[:1], name=mname, notes=[f"clip: {dname} {test.key(index)}, view 0"])
