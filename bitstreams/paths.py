"""Every failing endpoint of a placed-and-routed ECP5 design, grouped by the registers at its two ends.

nextpnr prints one critical path per clock; a design at 70 % of its target fails on thousands of
endpoints, and fixing them one nextpnr run at a time does not converge. This reads the SDF that
nextpnr writes (``--sdf``: every cell arc and every routed net delay) and runs its own static timing
analysis over it, single clock, setup only:

* arrival at a pin = the worst (max corner) of launch ``CLK* -> Q/DO*`` delay plus cell arcs plus
  net delays along any path; inputs of the out-of-context top, and constants, are not timed;
* required at an endpoint (a ``SETUPHOLD`` pin: FF data / enable / set-reset, block RAM ports, DSP
  inputs, distributed RAM write ports) = ``period - setup``; slack = required - arrival (the same
  numbers as nextpnr's report).

Endpoints are grouped by (launch register, capture register), each named by the design signal the
cell was made from (``linear.f_e0_TRELLIS_FF_Q_94`` -> ``linear.f_e0``, block RAM ``membranes.0.9`` ->
``membranes``), with the count of failing endpoints, the worst slack and the worst path's cells.

``python -m bitstreams.paths <workdir>/top.sdf [--period 10] [--top 40] [--path N]``
(``bitstreams.timing --sdf`` writes ``top.sdf`` into its work folder.)
"""

import argparse
import re
from collections import defaultdict
from pathlib import Path

_TRIPLE = r"\((-?\d+):(-?\d+):(-?\d+)\)"
_IOPATH = re.compile(r"\(IOPATH (\S+) (\S+) " + _TRIPLE + r"(?: " + _TRIPLE + r")?\)")
_INTERCONNECT = re.compile(r"\(INTERCONNECT (\S+) (\S+) " + _TRIPLE + r"(?: " + _TRIPLE + r")?\)")
_SETUP = re.compile(r"\(SETUPHOLD \((?:posedge|negedge) (\S+)\) \(posedge (\S+)\) " + _TRIPLE)
_INSTANCE = re.compile(r"\(INSTANCE ?(.*)\)")
_CELLTYPE = re.compile(r'\(CELLTYPE "(\S+)"\)')


def _is_clock(pin):
    return pin.startswith("CLK") or pin == "WCK"              # (WCK: a distributed RAM's write clock)


def parse_sdf(path):
    """(edges, launches, setups, celltype): ``edges[dst] = [(src, ps)]`` over pins ``inst/pin``;
    ``launches[pin] = clock-to-output ps``; ``setups[pin] = setup ps``; ``celltype[inst]``."""
    edges = defaultdict(list)
    launches, setups, celltype = {}, {}, {}
    inst = ctype = None
    with open(path) as f:
        for line in f:
            s = line.strip()
            if s.startswith("(INTERCONNECT"):
                m = _INTERCONNECT.match(s)
                d = max(int(m.group(5)), int(m.group(8) or 0))
                edges[m.group(2)].append((m.group(1), d))
            elif s.startswith("(IOPATH"):
                m = _IOPATH.match(s)
                a, b = f"{inst}/{m.group(1)}", f"{inst}/{m.group(2)}"
                d = max(int(m.group(5)), int(m.group(8) or 0))
                if _is_clock(m.group(1)):
                    launches[b] = max(launches.get(b, 0), d)
                else:
                    edges[b].append((a, d))
            elif s.startswith("(SETUPHOLD"):
                m = _SETUP.match(s)
                if m and _is_clock(m.group(2)):
                    p = f"{inst}/{m.group(1)}"
                    setups[p] = max(setups.get(p, 0), int(m.group(5)))
            elif s.startswith("(INSTANCE"):
                inst = _INSTANCE.match(s).group(1).strip()
                celltype[inst] = ctype
            elif s.startswith("(CELLTYPE"):
                ctype = _CELLTYPE.match(s).group(1)
    return edges, launches, setups, celltype


def arrivals(edges, launches):
    """Worst arrival (ps) and its predecessor at every timed pin."""
    arr, pred = dict(launches), {}
    state = {}                                            # 1: on the stack, 2: done
    for root in list(edges):
        if state.get(root) == 2:
            continue
        stack = [(root, iter(edges.get(root, ())))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            for src, _ in it:
                if src not in state and src in edges:
                    state[src] = 1
                    stack.append((src, iter(edges[src])))
                    break
            else:
                stack.pop()
                state[node] = 2
                best = arr.get(node)
                for src, d in edges.get(node, ()):
                    a = arr.get(src)
                    if a is not None and (best is None or a + d > best):
                        best, pred[node] = a + d, src
                if best is not None:
                    arr[node] = best
    return arr, pred


_SUFFIX = re.compile(r"(_TRELLIS_FF_Q|_TRELLIS_FF|_DP16KD|_MULT18X18D|_TRELLIS_RAMW|\$).*$")


def signal_name(inst):
    """The design signal a cell was made from: FF / LUT suffixes and block RAM tile indices removed."""
    n = inst.replace("\\", "")
    n = _SUFFIX.sub("", n) or n
    n = re.sub(r"(\.\d+)+$", "", n)                       # membranes.0.9 -> membranes
    return n


def _inst(pin):
    return pin.rsplit("/", 1)[0]


def endpoint_report(sdf, period_ps):
    edges, launches, setups, celltype = parse_sdf(sdf)
    arr, pred = arrivals(edges, launches)
    rows = []
    for pin, setup in setups.items():
        a = arr.get(pin)
        if a is None:
            continue
        path = [pin]
        while path[-1] in pred:
            path.append(pred[path[-1]])
        rows.append((period_ps - setup - a, pin, path[::-1]))
    rows.sort()
    return rows, celltype


def summarize(sdf, period_ns=10.0, top=12, paths=0):
    """The failing endpoints at ``period_ns`` as a JSON-able dict: counts, worst slack, and the ``top``
    worst (launch, capture) groups; ``paths`` worst paths pin by pin."""
    rows, celltype = endpoint_report(sdf, int(round(period_ns * 1000)))
    failing = [r for r in rows if r[0] < 0]
    groups = {}
    for slack, pin, path in failing:
        key = (signal_name(_inst(path[0])), signal_name(_inst(pin)))
        if key not in groups:
            levels = sum(1 for p in path if celltype.get(_inst(p)) == "TRELLIS_COMB" and p.endswith("/F"))
            groups[key] = {"launch": key[0], "capture": key[1], "failing": 0, "worst_ns": round(slack / 1000, 2),
                           "luts": levels}
        groups[key]["failing"] += 1
    return {"period_ns": period_ns, "timed_endpoints": len(rows), "failing_endpoints": len(failing),
            "worst_slack_ns": round(rows[0][0] / 1000, 2) if rows else None,
            "groups": sorted(groups.values(), key=lambda g: g["worst_ns"])[:top],
            "paths": [{"slack_ns": round(sl / 1000, 2), "pins": [p.replace("\\", "") for p in path]}
                      for sl, _, path in failing[:paths]]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sdf", type=Path)
    ap.add_argument("--period", type=float, default=10.0, help="clock period, ns")
    ap.add_argument("--top", type=int, default=40, help="groups to list")
    ap.add_argument("--path", type=int, default=0, help="also print the worst N paths pin by pin")
    args = ap.parse_args(argv)
    res = summarize(args.sdf, args.period, args.top, args.path)
    print(f"{res['timed_endpoints']} timed endpoints, {res['failing_endpoints']} failing at {args.period} ns; "
          f"worst slack {res['worst_slack_ns']} ns")
    print(f"{'failing':>8} {'worst ns':>8}  launch -> capture  (LUTs on the worst path)")
    for g in res["groups"]:
        print(f"{g['failing']:8d} {g['worst_ns']:8.2f}  {g['launch']} -> {g['capture']}  ({g['luts']})")
    for p in res["paths"]:
        print(f"\nslack {p['slack_ns']:.2f} ns:")
        for pin in p["pins"]:
            print("   ", pin)


if __name__ == "__main__":
    main()
