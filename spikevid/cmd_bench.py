"""``spikevid bench``: one clip on the accelerator (measured or modelled cycles) vs the CPU and GPU golden models.

The work is :func:`benchmarks.compare.bench` (``python -m benchmarks.compare`` takes the same options);
this module only defines the command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("bench", help="accelerator cycles (measured on the RTL / modelled), latency, link time, "
                                     "CPU and GPU time, ops per cycle and energy for one clip")
    add_arguments(p)
    p.set_defaults(func=bench_cmd)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``spikevid bench`` and ``python -m benchmarks.compare``."""
    p.add_argument("--model", default="svformer-tiny",
                   help="svformer-tiny, spikevideoformer-tiny (shipped checkpoints: cycles measured on the RTL) or "
                        "svformer, spikevideoformer (full size: cycles modelled, a sample of tokens on the RTL)")
    p.add_argument("--clip", type=int, default=0, help="synthetic test clip (tiny) / random seed (full size)")
    p.add_argument("--transport", choices=("verilator", "emulator"), default="verilator",
                   help="device for the measured cycles (tiny) and the sampled tokens (full size)")
    p.add_argument("--repeats", type=int, default=5, help="timed CPU runs per model and batch, after a warm-up")
    p.add_argument("--gpu-repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 is steadier on a machine shared with other jobs)")
    p.add_argument("--layer-repeats", type=int, default=3, help="timed runs of the per-layer hooks")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="CPU batch sizes")
    p.add_argument("--gpu-batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--sample-tokens", type=int, default=256, help="full size: tokens per sampled layer on the RTL")
    p.add_argument("--sample-layers", type=int, default=4, help="full size: layers sampled on the RTL (0: none)")
    p.add_argument("--report", type=Path, default=None,
                   help="bitstream report with the clock, UART rate and lanes (default "
                        "bitstreams/reports/ulx3s-85f.json; assumptions, labelled so, when it does not exist)")
    p.add_argument("--out", type=Path, default=Path("runs/bench"), help="directory of the JSON result")
    p.add_argument("--figures", type=Path, default=Path("benchmarks/figures"), help="directory of the PNG")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the tables")


def bench_cmd(args) -> int:
    try:
        from benchmarks.compare import run_from_args
    except ModuleNotFoundError as e:  # an editable install made before `benchmarks` became a package
        raise FileNotFoundError(f"{e}: reinstall the project (pip install -e .)") from e
    r = run_from_args(args)
    return 0 if r["accelerator"]["logits_equal_golden"] is not False else 1
