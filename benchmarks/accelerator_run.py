"""Whole tiny models through the accelerator protocol: per-layer cycles, utilisation, link bytes.

    python -m benchmarks.accelerator_run [--transport emulator|verilator] [--clips 1] [--out runs/bench]

For each shipped tiny model, one synthetic test clip goes through ``driver.run.run`` on the chosen
transport; the logits must equal the golden model's (the run fails otherwise). Per offloaded layer
it reports the input spikes, SOPs (input spikes x the output channels they reach), the engine's
busy cycles (``emulator``: the ``golden_model.perf`` cycle models, which the RTL's counters match;
``verilator``: the RTL's own counters), lane utilisation ``SOPs / (P x busy)`` for the accumulate
engines, and the bytes on the link split by class (``driver.protocol.LINK_CLASSES``: weights,
parameters, activations in, results out, control). The link/engine balance is given at a 100 MHz
clock for three links: a 115,200 baud UART and a 3 Mbaud UART (10 bits per byte; the ULX3S's FT231X
reaches 3 Mbaud) and a 12 Mbit/s USB-FIFO bridge (FT2232H-class, 8 bits per byte).

``verilator`` also reports the simulation speed two ways: simulated cycles per wall second of the
whole run (host Python included; the cycles include those the model idles while the host prepares
frames), and the model alone: the recorded request bytes replayed into a fresh model process with
no host in the loop (its responses must equal the run's byte for byte).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

MODELS = ("svformer-tiny", "spikevideoformer-tiny")
CLOCK_HZ = 100e6
LINKS = {"uart_115200": 115200 / 10, "uart_3M": 3e6 / 10, "usb_fifo_12M": 12e6 / 8}  # bytes per second


def open_device(transport: str):
    from driver.emulator import Emulator
    from driver.protocol import Device
    from driver.transport import EmulatorTransport, VerilatorTransport

    if transport == "emulator":
        return Device(EmulatorTransport(Emulator()), timeout=30.0), None
    from rtl.accelerator import Accelerator
    from sim.byte_model import build_byte_model

    binary = build_byte_model("accelerator", Accelerator)
    t = VerilatorTransport(binary, record=True)
    return Device(t, timeout=600.0), t


def replay(binary, sent: bytes, received: bytes) -> dict:
    """Feed ``sent`` into a fresh model process at once; its output must equal ``received``."""
    import subprocess

    t0 = time.perf_counter()
    res = subprocess.run([str(binary)], input=bytes(sent), capture_output=True, timeout=3600)
    wall = time.perf_counter() - t0
    if res.returncode != 0 or res.stdout != bytes(received):
        raise SystemExit(f"replay of {len(sent):,} bytes: exit {res.returncode}, "
                         f"output {'equal' if res.stdout == bytes(received) else 'differs'}")
    cycles = int(next(ln.split()[1] for ln in res.stderr.decode().splitlines() if ln.startswith("cycles ")))
    return {"cycles": cycles, "wall_s": wall, "cycles_per_second": cycles / wall}


def model_rows(model: str, transport: str, clip: int) -> dict:
    from driver.program import compile_model
    from driver.protocol import LINK_CLASSES
    from driver.run import run
    from golden_model.pipeline import load_golden
    from golden_model.train import test_split

    g = load_golden(model)
    clips, _ = test_split(g.meta, size=clip + 1).batch(slice(clip, clip + 1))
    x = g.int_model.quantize_clip(clips)
    golden = g.int_model(x)
    device, pipe = open_device(transport)
    info = device.info()
    program = compile_model(g.int_model, info)
    t0 = time.perf_counter()
    res = run(program, x, device, progress=True)
    wall = time.perf_counter() - t0
    device.close()
    if not torch.equal(res.logits, golden):
        raise SystemExit(f"{model}: the {transport} logits differ from the golden model's")
    rows = []
    for s in res.layers:
        c = s.counters
        busy = s.cycles
        acc_engine = s.kind in ("linear", "conv", "attention")
        util = (s.sops / (info.lanes * busy)) if acc_engine and s.kind != "attention" and busy else None
        rows.append({"layer": s.name, "kind": s.kind, "in_spikes": s.in_spikes, "sops": s.sops, "busy": busy,
                     "utilisation": util, "bytes_in": c.get("bytes_in", 0), "bytes_out": c.get("bytes_out", 0),
                     "link": {k: s.link.get(k, 0) for k in LINK_CLASSES}})
    busy = sum(r["busy"] for r in rows)
    link_bytes = sum(r["bytes_in"] + r["bytes_out"] for r in rows)
    link_split = {k: sum(r["link"][k] for r in rows) for k in LINK_CLASSES}
    if sum(link_split.values()) != link_bytes:
        raise SystemExit(f"{model}: host link bytes {sum(link_split.values())} != device counters {link_bytes}")
    acc_rows = [r for r in rows if r["kind"] in ("linear", "conv")]
    out = {"model": model, "transport": transport, "lanes": info.lanes, "layers": rows, "wall_s": wall,
           "engine_busy_cycles": busy, "sops": sum(r["sops"] for r in rows), "link_bytes": link_bytes,
           "link_bytes_by_class": link_split,
           "engine_seconds_at_100MHz": busy / CLOCK_HZ,
           "link_seconds": {k: link_bytes / v for k, v in LINKS.items()},
           "linear_utilisation": (sum(r["sops"] for r in acc_rows) / (info.lanes * sum(r["busy"] for r in acc_rows))
                                  if acc_rows else None)}
    if pipe is not None:
        out["simulated_cycles"] = pipe.cycles
        out["simulated_cycles_per_second"] = pipe.cycles / wall if pipe.cycles else None
        out["model_alone"] = replay(pipe.binary, pipe.sent, pipe.received)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transport", choices=("emulator", "verilator"), default="emulator")
    ap.add_argument("--clip", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = ap.parse_args(argv)
    results = [model_rows(m, args.transport, args.clip) for m in MODELS]
    for r in results:
        print(f"\n{r['model']} via {r['transport']}: logits equal the golden model's; wall {r['wall_s']:.2f} s"
              + (f", {r['simulated_cycles']:,} simulated cycles ({r['simulated_cycles_per_second']:,.0f}/s)"
                 if r.get("simulated_cycles") else ""))
        print(f"  {'layer':34s} {'kind':9s} {'in spikes':>9s} {'SOPs':>9s} {'busy':>8s} {'util':>5s} {'bytes':>8s}")
        for row in r["layers"]:
            u = f"{row['utilisation']:.3f}" if row["utilisation"] is not None else "-"
            print(f"  {row['layer'][-34:]:34s} {row['kind']:9s} {row['in_spikes']:9d} {row['sops']:9d}"
                  f" {row['busy']:8d} {u:>5s} {row['bytes_in'] + row['bytes_out']:8d}")
        print(f"  engines busy {r['engine_busy_cycles']:,} cycles = {r['engine_seconds_at_100MHz'] * 1e3:.2f} ms at"
              f" 100 MHz; link {r['link_bytes']:,} bytes = "
              + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in r["link_seconds"].items())
              + f"; spike-accumulate utilisation {r['linear_utilisation']:.3f}")
        print("  link bytes by class: " + ", ".join(f"{k} {v:,}" for k, v in r["link_bytes_by_class"].items()))
        if "model_alone" in r:
            a = r["model_alone"]
            print(f"  model alone (replayed requests): {a['cycles']:,} cycles in {a['wall_s']:.2f} s = "
                  f"{a['cycles_per_second']:,.0f} cycles/s")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"accelerator_run_{args.transport}.json"
    path.write_text(json.dumps({"env": {"torch": torch.__version__, "python": platform.python_version(),
                                        "clip": args.clip}, "models": results}, indent=2))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
