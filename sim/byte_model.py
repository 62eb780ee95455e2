"""A standalone Verilator executable of a byte-stream component, driven through pipes.

:func:`build_byte_model` converts an Amaranth component with ``rx`` (``In``) and ``tx`` (``Out``)
8-bit ``amaranth.lib.stream`` ports (and optionally a ``busy`` output) to Verilog and compiles it
with ``sim/cpp/byte_harness.cpp`` into one executable, cached like :func:`sim.verilator.build`
(``sim_build/<name>-<hash>/``). The executable reads request bytes on stdin and writes response
bytes to stdout, one clock per byte slot, with no Python in the simulation loop:
``driver.transport.VerilatorTransport`` runs it.

The component is wrapped in :class:`PowerOnReset` before conversion: its reset comes from a
``POR_CYCLES`` counter inside the model, not from a top-level ``rst`` input. Every Amaranth register's
next-state logic reads the domain reset; with ``rst`` a top input, Verilator evaluates all of that
logic in its input-combinational region, once more per ``eval()``. Without it the model simulates the
accelerator about 1.5x faster (measured in BENCHMARKS.md). The C++ is compiled with ``-O2``
(Verilator's make default for the model is ``-Os``), another 1.2x.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from amaranth import ClockDomain, ClockSignal, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sim.verilator import DEFAULT_BUILD_ARGS, SIM_BUILD, _locked, _tool_versions, setup_environment, to_verilog

__all__ = ["HARNESS", "POR_CYCLES", "PowerOnReset", "build_byte_model"]

HARNESS = Path(__file__).resolve().parent / "cpp" / "byte_harness.cpp"
POR_CYCLES = 4  # the harness idles 16 cycles before its first byte (sim/cpp/byte_harness.cpp)
OPT_MAKEFLAGS = "OPT_FAST=-O2 OPT_SLOW=-O1"


class PowerOnReset(wiring.Component):
    """``inner`` with its ``sync`` reset held for the first :data:`POR_CYCLES` clocks, then released.

    Ports: ``clk`` and the inner component's own ports (passed through); no ``rst``.
    """

    def __init__(self, inner: wiring.Component):
        self.inner = inner
        super().__init__({"clk": In(1), **inner.signature.members})

    def elaborate(self, platform) -> Module:
        m = Module()
        m.domains.por = ClockDomain(reset_less=True)
        m.domains.sync = sync = ClockDomain()
        count = Signal(range(POR_CYCLES + 1))
        with m.If(count != POR_CYCLES):
            m.d.por += count.eq(count + 1)
        m.d.comb += [ClockSignal("por").eq(self.clk), sync.clk.eq(self.clk), sync.rst.eq(count != POR_CYCLES)]
        m.submodules.inner = self.inner
        for name, member in self.inner.signature.members.items():
            ours, theirs = getattr(self, name), getattr(self.inner, name)
            if member.is_signature:
                wiring.connect(m, wiring.flipped(ours), theirs)
            elif member.flow == Out:
                m.d.comb += ours.eq(theirs)
            else:
                m.d.comb += theirs.eq(ours)
        return m


def _ports(component) -> set[str]:
    return {"__".join(str(p) for p in path) for path, *_ in component.signature.flatten(component)}


def build_byte_model(name: str, make_component: Callable[[], object] | object,
                     params: Mapping[str, object] | None = None, *, root: Path = SIM_BUILD,
                     jobs: int = 2) -> Path:
    """Compile (or reuse) the pipe-driven executable of a byte-stream component; returns its path."""
    setup_environment()
    from amaranth.lib import wiring

    component = make_component if isinstance(make_component, wiring.Component) else make_component()
    ports = _ports(component)
    missing = {"rx__valid", "rx__ready", "rx__payload", "tx__valid", "tx__ready", "tx__payload"} - ports
    if missing:
        component._MustUse__silence = True  # rejected, never elaborated: no "created but never used" warning
        raise ValueError(f"{name}: not a byte-stream component, missing ports {sorted(missing)}")
    toplevel = f"{name}_top"
    text = to_verilog(PowerOnReset(component), toplevel)
    defines = ["-CFLAGS", "-DHAS_BUSY"] if "busy" in ports else []
    args = [*DEFAULT_BUILD_ARGS, *defines, "-MAKEFLAGS", OPT_MAKEFLAGS]
    key = json.dumps({"verilog": text, "harness": HARNESS.read_text(), "args": args, "tools": _tool_versions(),
                      "params": dict(params or {})}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    build_dir = root / f"{name}-pipe-{digest}"
    binary = build_dir / "model"
    stamp = build_dir / "build.stamp"
    with _locked(root / f".{name}-pipe-{digest}.lock"):
        if stamp.is_file() and stamp.read_text() == digest and binary.is_file():
            return binary
        if build_dir.exists():
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True)
        vfile = build_dir / f"{toplevel}.v"
        vfile.write_text(text)
        cmd = ["verilator", "--cc", "--exe", "--build", "-j", str(jobs), "--top-module", toplevel, "--prefix", "Vtop",
               "-o", "model", "-Mdir", str(build_dir / "obj"), *args, str(vfile), str(HARNESS)]
        t0 = time.monotonic()
        res = subprocess.run(cmd, cwd=build_dir, capture_output=True, text=True)
        (build_dir / "build.log").write_text(res.stdout + res.stderr)
        if res.returncode != 0:
            log = (res.stdout + res.stderr)[-6000:]
            raise RuntimeError(f"Verilator build of {name} failed ({res.returncode}):\n{log}")
        shutil.copy2(build_dir / "obj" / "model", binary)
        for junk in (build_dir / "obj").glob("*.o"):
            junk.unlink()
        stamp.write_text(digest)
        (build_dir / "build_seconds").write_text(f"{time.monotonic() - t0:.1f}\n")
    return binary
