"""``spikevid synth <config>``: a board bitstream with the YoWASP Yosys / nextpnr and its report.

The flow is :mod:`bitstreams.build` (``bitstreams/README.md``): the bitstream goes to ``build/<config>/``
(git-ignored), the report to ``bitstreams/reports/<config>.json`` and ``.md``. Exit status 1 when timing
fails or the design does not fit, 2 when a tool fails. ``--synth-only`` runs Yosys alone (cell counts,
no place and route, no report).
"""

from __future__ import annotations

import json


def register(sub) -> None:
    from bitstreams.boards import CONFIGS

    p = sub.add_parser("synth", help="build a board bitstream (Yosys + nextpnr, YoWASP) and write its report")
    p.add_argument("config", nargs="+", help=f"configuration(s): {', '.join(CONFIGS)}, or all")
    p.add_argument("--clock-mhz", type=float, help="override the configuration's clock (the baud must divide it)")
    p.add_argument("--synth-only", action="store_true", help="Yosys only: cell counts, no place and route")
    p.add_argument("--json", action="store_true", help="print the report(s) as JSON")
    p.set_defaults(func=synth_cmd)


def synth_cmd(args) -> int:
    from bitstreams.boards import CONFIGS, get_config
    from bitstreams.build import build_config, synth_stats

    names = list(CONFIGS) if args.config == ["all"] else args.config
    for name in names:
        get_config(name)          # unknown names fail before any build (KeyError -> exit 2)
    worst, reports = 0, []
    echo = (lambda *a, **k: None) if args.json else print
    for name in names:
        if args.synth_only:
            stats = synth_stats(name)
            reports.append({"name": name, "yosys_cells": stats})
            echo(f"{name}: " + ", ".join(f"{k} {v:,}" for k, v in stats.items()))
            continue
        try:
            rep = build_config(name, clock_hz=int(args.clock_mhz * 1e6) if args.clock_mhz else None, echo=echo)
        except RuntimeError as e:
            print(f"spikevid synth: {e}")
            worst = 2
            continue
        reports.append(rep)
        if not rep["fits"] or not rep["timing_met"]:
            print(f"{name}: {'DOES NOT FIT' if not rep['fits'] else 'TIMING FAILED'}")
            worst = max(worst, 1)
    if args.json:
        print(json.dumps(reports, indent=1))
    return worst
