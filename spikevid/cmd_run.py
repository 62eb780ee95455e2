"""``spikevid run``: a clip through the accelerator (a transport), checked against the golden model."""

from __future__ import annotations

import json

import torch

TRANSPORTS = ("emulator", "verilator", "serial")


def register(sub) -> None:
    p = sub.add_parser("run", help="run a tiny model on a synthetic clip through the accelerator protocol")
    p.add_argument("--model", default="svformer-tiny", help="shipped model name or checkpoint path")
    p.add_argument("--clip", type=int, default=0, help="index into the synthetic test split")
    p.add_argument("--transport", choices=TRANSPORTS, default="emulator",
                   help="emulator: the protocol executed by the golden model in Python; verilator: the RTL "
                        "accelerator compiled by Verilator (built on first use); serial: a board")
    p.add_argument("--port", help="serial port of the board (--transport serial)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each device response")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_cmd)


def open_device(args):
    """A ``driver.protocol.Device`` on the chosen transport."""
    from driver.protocol import Device
    from driver.transport import EmulatorTransport, SerialTransport

    if args.transport == "emulator":
        from driver.emulator import Emulator

        return Device(EmulatorTransport(Emulator()), timeout=args.timeout)
    if args.transport == "verilator":
        from driver.transport import VerilatorTransport
        from rtl.accelerator import Accelerator
        from sim.byte_model import build_byte_model

        if not args.json:
            print("building the Verilator model of rtl.accelerator.Accelerator (cached in sim_build/) ...", flush=True)
        return Device(VerilatorTransport(build_byte_model("accelerator", Accelerator)), timeout=max(args.timeout, 600))
    if not args.port:
        raise ValueError("--transport serial needs --port")
    return Device(SerialTransport(args.port, baudrate=args.baud), timeout=args.timeout)


def run_cmd(args) -> int:
    from driver.program import compile_model
    from driver.run import run
    from golden_model.pipeline import load_golden
    from spikevid.cmd_golden import _test_clip

    g = load_golden(args.model)
    clip, label, classes = _test_clip(g, args.clip)
    x = g.int_model.quantize_clip(clip)
    with torch.inference_mode():
        golden = g.int_model(x)
    device = open_device(args)
    program = compile_model(g.int_model, device.info())
    res = run(program, x, device, progress=not args.json)
    device.close()
    cycles = getattr(device.transport, "cycles", None)
    exact = bool(torch.equal(res.logits, golden))
    cls = int(res.logits[0].argmax())
    totals = res.totals()
    out = {"model": g.name, "clip": args.clip, "transport": args.transport, "label": classes[label],
           "class": classes[cls], "logits_equal_golden": exact, "logits": [int(v) for v in res.logits[0]],
           "seconds": round(res.seconds, 3), "simulated_cycles": cycles, "program": program.summary(),
           "totals": totals,
           "layers": [{"name": s.name, "kind": s.kind, "cycles": s.cycles, "in_spikes": s.in_spikes, "sops": s.sops,
                       "bytes_in": s.counters.get("bytes_in", 0), "bytes_out": s.counters.get("bytes_out", 0)}
                      for s in res.layers]}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0 if exact else 1
    print(f"{g.name}: synthetic test clip {args.clip} (label: {out['label']}) via {args.transport}")
    print(f"  class: {out['class']}    logits equal the golden model's: {exact}    wall time {res.seconds:.2f} s")
    print(f"  {len(program.plans)} layers on the device, {len(program.host_layers)} on the host")
    if cycles:
        print(f"  Verilator: {cycles:,} simulated cycles, {cycles / res.seconds:,.0f} cycles/s")
    print(f"\n  {'layer':40s} {'kind':9s} {'cycles':>9s} {'in spikes':>10s} {'SOPs':>10s} {'bytes in':>9s}")
    for row in out["layers"]:
        print(f"  {row['name'][-40:]:40s} {row['kind']:9s} {row['cycles']:9d} {row['in_spikes']:10d} {row['sops']:10d}"
              f" {row['bytes_in']:9d}")
    cyc = sum(r["cycles"] for r in out["layers"])
    print(f"  {'total':40s} {'':9s} {cyc:9d} {totals['in_spikes']:10d} {totals['sops']:10d}"
          f" {totals.get('bytes_in', 0):9d}")
    return 0 if exact else 1
