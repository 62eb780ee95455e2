"""Golden-model commands: ``demo`` (the main job), ``quantize`` (accuracy cost), ``qat`` (quantisation-aware
fine-tuning), ``trace`` (layer dumps)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch


def register(sub) -> None:
    p = sub.add_parser("demo", help="run a trained tiny model on a synthetic clip in float and integer")
    p.add_argument("--model", default="svformer-tiny", help="shipped model name or checkpoint path")
    p.add_argument("--clip", type=int, default=0, help="index into the synthetic test split")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=demo)

    p = sub.add_parser("quantize", help="quantise a trained model and report the accuracy it costs")
    p.add_argument("--model", default="svformer-tiny", help="shipped model name or checkpoint path")
    p.add_argument("--test-size", type=int, default=500)
    p.add_argument("--calib", type=int, default=64, help="calibration clips from the training split")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=quantize_cmd)

    p = sub.add_parser("qat", help="quantisation-aware fine-tuning when quantisation costs accuracy",
                       description="Fine-tune a trained checkpoint with the integer formats imposed in the forward "
                       "pass (golden_model.qat), quantise it again, and report float and integer accuracy before "
                       "and after on the synthetic test split.")
    p.add_argument("--model", default="spikevideoformer-tiny", help="shipped model name or checkpoint path")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--calib", type=int, default=64, help="calibration clips from the training split")
    p.add_argument("--test-size", type=int, default=500)
    p.add_argument("--train-size", type=int, default=None, help="fine-tuning clips (default: the checkpoint's)")
    p.add_argument("--out", type=Path, default=None, help="checkpoint to write (default runs/qat/<model>-qat.pt)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=qat_cmd)

    p = sub.add_parser("trace", help="dump integer spike tensors / accumulators of chosen layers for a clip")
    p.add_argument("--model", default="svformer-tiny", help="shipped model name or checkpoint path")
    p.add_argument("--clip", type=int, default=0, help="index into the synthetic test split")
    p.add_argument("--layers", default=".*", help="regular expression over layer names (default: all)")
    p.add_argument("--out", type=Path, required=True, help="output .pt file: {'<layer>:<kind>': tensor}")
    p.set_defaults(func=trace_cmd)


def _test_clip(golden, index: int):
    from golden_model.train import test_split

    ds = test_split(golden.meta, size=index + 1)
    if not 0 <= index < len(ds):
        raise ValueError(f"--clip must be in [0, {len(ds) - 1}], got {index}")
    clip, label = ds.batch(slice(index, index + 1))
    return clip, int(label[0]), ds.classes


def demo(args) -> int:
    from golden_model.energy import profile_clip
    from golden_model.pipeline import load_golden

    g = load_golden(args.model)
    clip, label, classes = _test_clip(g, args.clip)
    with torch.inference_mode():
        f_logits = g.float_model(clip)[0]
        i_logits = g.int_model(g.int_model.quantize_clip(clip))[0]
        again = g.int_model(g.int_model.quantize_clip(clip))[0]
    report = profile_clip(g.float_model, clip, name=g.name)
    f_cls, i_cls = int(f_logits.argmax()), int(i_logits.argmax())
    out = {"model": g.name, "clip": args.clip, "label": classes[label], "float_class": classes[f_cls],
           "int_class": classes[i_cls], "classes_agree": f_cls == i_cls,
           "int_deterministic": bool(torch.equal(i_logits, again)),
           "float_logits": [round(float(v), 4) for v in f_logits],
           "int_logits": [int(v) for v in i_logits], "int_logit_frac_bits": g.int_model.logit_frac_bits,
           "max_abs_logit_diff": float((g.int_model.logits_float(i_logits) - f_logits.double()).abs().max()),
           "residual_frac_bits": g.int_model.frac_bits, "energy": report.totals()}
    if args.json:
        print(json.dumps(out | {"energy_layers": report.to_dict()}, indent=2))
        return 0
    print(f"{g.name}: synthetic test clip {args.clip} (label: {out['label']})")
    print(f"  float model   -> {out['float_class']}")
    print(f"  integer model -> {out['int_class']}   (classes agree: {out['classes_agree']}, "
          f"integer run-to-run identical: {out['int_deterministic']})")
    print(f"  max |int - float| logit: {out['max_abs_logit_diff']:.4f}  (residual stream Q.{g.int_model.frac_bits}"
          f" int16, logits int32 Q.{g.int_model.logit_frac_bits})")
    print()
    print(report.format_table())
    return 0


def quantize_cmd(args) -> int:
    from golden_model.pipeline import compare, load_golden
    from golden_model.train import test_split

    g = load_golden(args.model, calib=args.calib)
    ds = test_split(g.meta, size=args.test_size)
    res = compare(g.float_model, g.int_model, *ds.batch(slice(None)), progress=not args.json)
    out = {"model": g.name, "calibration_clips": args.calib} | res.to_dict()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{g.name}: {res.clips} synthetic test clips, {args.calib} calibration clips")
    print(f"  float accuracy   {100 * res.float_acc:6.2f} %")
    print(f"  integer accuracy {100 * res.int_acc:6.2f} %   (cost {res.cost:+.2f} points)")
    print(f"  class agreement  {100 * res.agreement:6.2f} %   integer run-to-run identical: {res.deterministic}")
    print(f"  residual format  int16 Q.{res.frac_bits}")
    return 0


def qat_cmd(args) -> int:
    from golden_model.pipeline import calibration_clips, compare, quantize
    from golden_model.qat import fine_tune
    from golden_model.train import load_checkpoint, save_checkpoint, test_split

    if min(args.epochs, args.calib, args.test_size, args.train_size or 1) < 1 or args.lr <= 0:
        raise ValueError("--epochs, --calib, --test-size and --train-size must be >= 1 and --lr > 0")
    model, meta = load_checkpoint(args.model)
    name = meta.get("model", args.model)
    out = args.out or Path("runs/qat") / f"{name}-qat.pt"
    calib = calibration_clips(meta, args.calib)
    test = test_split(meta, size=args.test_size)
    clips, labels = test.batch(slice(None))
    say = (lambda s: None) if args.json else print

    def measure(m):
        with torch.inference_mode():
            return compare(m, quantize(m, calib), clips, labels, progress=not args.json)

    before = measure(model)
    say(f"{name}: before: float {100 * before.float_acc:.2f} %, integer {100 * before.int_acc:.2f} % "
        f"(cost {before.cost:+.2f} points)")
    model, new_meta = fine_tune(model, meta, calib, epochs=args.epochs, lr=args.lr, seed=args.seed,
                                train_size=args.train_size, test_size=args.test_size, progress=not args.json,
                                log=say)
    after = measure(model)
    new_meta["qat"]["after"] = after.to_dict()
    new_meta["qat"]["before"] = before.to_dict()
    path = save_checkpoint(model, new_meta, out)
    result = {"model": name, "checkpoint": str(path), "epochs": args.epochs, "lr": args.lr,
              "calibration_clips": args.calib, "before": before.to_dict(), "after": after.to_dict(),
              "integer_gain_points": 100 * (after.int_acc - before.int_acc),
              "integer_vs_original_float_points": 100 * (before.float_acc - after.int_acc)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{name}: after {args.epochs} QAT epochs: float {100 * after.float_acc:.2f} %, integer "
          f"{100 * after.int_acc:.2f} % ({result['integer_gain_points']:+.2f} points; "
          f"{result['integer_vs_original_float_points']:+.2f} below the original float model)")
    print(f"wrote {path}")
    return 0


def trace_cmd(args) -> int:
    from golden_model.intlayers import Tracer
    from golden_model.pipeline import load_golden

    g = load_golden(args.model)
    clip, _, _ = _test_clip(g, args.clip)
    pattern = re.compile(args.layers)
    tracer = Tracer(lambda name: pattern.search(name) is not None)
    with torch.inference_mode():
        g.int_model(g.int_model.quantize_clip(clip), tracer)
    if not tracer.records:
        raise ValueError(f"no layer matches {args.layers!r}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tracer.records, args.out)
    for key, t in tracer.records.items():
        print(f"{key:40s} {str(t.dtype).removeprefix('torch.'):6s} {tuple(t.shape)}")
    print(f"wrote {len(tracer.records)} tensors to {args.out}")
    return 0
