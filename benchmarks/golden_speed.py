"""Golden-model speed: float vs integer inference time for one full-size clip, batch 1, on this CPU.

    python -m benchmarks.golden_speed [--models svformer spikevideoformer] [--repeats 3] [--out runs/bench]

Times are the best of ``--repeats`` runs after a warm-up (median also reported). Weights are freshly
initialised (speed does not depend on them: both paths are dense on the CPU);
the integer model is quantised from the float one on one calibration clip. Prints a table and
writes ``golden_speed.json``. Figures go to BENCHMARKS.md with this command.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from golden_model.pipeline import quantize
from golden_model.zoo import build_model


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_model(name: str, repeats: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = build_model(name).eval()
    cfg = model.cfg
    clip = torch.randn(1, cfg.in_chans, cfg.frames, cfg.img_size, cfg.img_size)
    with torch.inference_mode():
        float_s = _time(lambda: model(clip), repeats)
        int_model = quantize(model, [clip])
        qclip = int_model.quantize_clip(clip)
        int_s = _time(lambda: int_model(qclip), repeats)
    f, i = min(float_s), min(int_s)  # best of the repeats: least disturbed by other processes
    return {"model": name, "clip": [1, cfg.in_chans, cfg.frames, cfg.img_size, cfg.img_size],
            "params": sum(p.numel() for p in model.parameters()),
            "float_s": f, "int_s": i, "int_over_float": i / f, "float_median_s": statistics.median(float_s),
            "int_median_s": statistics.median(int_s), "float_runs": float_s, "int_runs": int_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["svformer", "spikevideoformer"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = ap.parse_args(argv)
    rows = [bench_model(m, args.repeats) for m in tqdm(args.models, desc="golden speed", unit="model")]
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or
           platform.machine(), "python": platform.python_version()}
    print(f"best of {args.repeats} after one warm-up run, batch 1, {env['threads']} threads")
    print(f"{'model':18s} {'clip':>12s} {'float s':>9s} {'int s':>9s} {'int/float':>9s} {'median f/i s':>14s}")
    for r in rows:
        clip = "x".join(map(str, r["clip"][2:]))
        print(f"{r['model']:18s} {clip:>12s} {r['float_s']:9.3f} {r['int_s']:9.3f} {r['int_over_float']:9.2f} "
              f"{r['float_median_s']:6.3f}/{r['int_median_s']:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "golden_speed.json").write_text(json.dumps({"env": env, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
