"""RTL simulations in Verilator with cocotb testbenches (``sim/tb_*.py``).

Each configuration is converted and compiled once per pytest session (session-scoped fixtures;
``sim_build/<name>-<hash>/`` is reused across sessions while its Verilog is unchanged); each
pytest test runs one or more cocotb tests of a testbench module against it.
"""

from __future__ import annotations

import os
import shutil

import pytest

from sim.verilator import SIM_BUILD, CocotbFailure, build, run_cocotb

# Engine configurations: a small one (two lane groups, four heads) and a realistic one (the
# interface page's default width; windows of up to 4096 tokens hold SpikeVideoFormer-tiny's
# 64-token clip windows and SVFormer-tiny's frames).
ENGINE_CONFIGS = {
    "small": {"dim_max": 16, "lanes": 8, "max_tokens": 256, "heads": 4},
    "realistic": {"dim_max": 64, "lanes": 64, "max_tokens": 4096, "heads": 2},
}
TRACE_MODELS = ["svformer-tiny", "spikevideoformer-tiny"]  # those with a shipped checkpoint

# Verilator's driver is a perl script and its models are compiled with make and a C++ compiler.
_missing = [tool for tool in ("perl", "make") if shutil.which(tool) is None]
if shutil.which("c++") is None and shutil.which("g++") is None:
    _missing.append("c++")
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"Verilator builds need {', '.join(_missing)}")

# --------------------------------------------------------------------------------------------
# Infrastructure self-test (a small Amaranth stream component, sim/tb_selftest.py)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def selftest_build():
    from sim.tb_selftest import PairAdder

    params = {"lanes": 3, "depth": 4}
    return build("pair_adder", lambda: PairAdder(**params), params)


def test_selftest_streams(selftest_build):
    run_cocotb("sim.tb_selftest", selftest_build, testcase=["test_stream_exact", "test_edge_sampling"])


def test_selftest_build_cached(selftest_build):
    from sim.tb_selftest import PairAdder

    again = build("pair_adder", lambda: PairAdder(lanes=3, depth=4), {"lanes": 3, "depth": 4})
    assert again is selftest_build  # one build per configuration per session
    assert (selftest_build.build_dir / selftest_build.toplevel).is_file()
    assert selftest_build.build_dir.parent == SIM_BUILD
    assert selftest_build.build_dir.name.startswith("pair_adder-")


def test_selftest_failure_reaches_pytest(selftest_build, monkeypatch):
    monkeypatch.delenv("SPIKEVID_SELFTEST_FAIL", raising=False)
    with pytest.raises(CocotbFailure, match="intentional failure"):
        run_cocotb("sim.tb_selftest", selftest_build, testcase="test_must_fail",
                   extra_env={"SPIKEVID_SELFTEST_FAIL": "1"})
    assert "SPIKEVID_SELFTEST_FAIL" not in os.environ


# --------------------------------------------------------------------------------------------
# Attention engine (rtl/attention.py, sim/tb_attention.py)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", params=list(ENGINE_CONFIGS))
def engine_build(request):
    from rtl.attention import AttentionEngine

    params = ENGINE_CONFIGS[request.param]
    return build("attention_engine", lambda: AttentionEngine(**params), params)


@pytest.fixture(scope="session")
def trace_windows_file(tmp_path_factory):
    """Real q/k/v windows of the shipped tiny models, traced in this session (sim/traces.py)."""
    from sim.traces import save_trace_windows, shipped

    assert shipped("svformer-tiny")
    return save_trace_windows(TRACE_MODELS, tmp_path_factory.mktemp("traces") / "attention_windows.pt")


def test_attention_engine(engine_build, trace_windows_file):
    """All cocotb tests of sim/tb_attention.py in one simulator run per configuration.

    Densities 0..100 % in both modes, dim < D_MAX, every head, all-ones windows at N_MAX, real
    trace windows, every error code with recovery, long output stalls, the cycle model. A failure
    names the failing cocotb tests; run one alone with ``run_cocotb(..., testcase=...)``.
    """
    run_cocotb("sim.tb_attention", engine_build, extra_env={"SPIKEVID_TB_TRACES": str(trace_windows_file)})


def test_parallel_heads(trace_windows_file):
    """sim/tb_parallel_heads.py: two attention engines behind one stream, heads interleaved, on Verilator."""
    from rtl.attention_heads import ParallelHeads

    params = {"units": 2, "heads": 4, "dim_max": 16, "lanes": 8, "max_tokens": 256}
    b = build("parallel_heads", lambda: ParallelHeads(**params), params)
    run_cocotb("sim.tb_parallel_heads", b, extra_env={"SPIKEVID_TB_TRACES": str(trace_windows_file)})


# --------------------------------------------------------------------------------------------
# Requant + LIF unit (rtl/requant_lif.py, sim/tb_requant_lif.py)
# --------------------------------------------------------------------------------------------

REQUANT_LIF_CONFIGS = {
    "small": {"lanes": 4, "groups": 2, "neurons": 6},
    "wide": {"lanes": 16, "groups": 4, "neurons": 20},
}


@pytest.fixture(scope="session", params=list(REQUANT_LIF_CONFIGS))
def requant_lif_build(request):
    from rtl.requant_lif import RequantLIF

    params = REQUANT_LIF_CONFIGS[request.param]
    return build("requant_lif", lambda: RequantLIF(**params), params)


def test_requant_lif(requant_lif_build):
    """sim/tb_requant_lif.py: random (extreme) parameters over several time steps, random idle /
    backpressure, exact against intops.requant + lif_step; throughput, latency and the clear sweep."""
    run_cocotb("sim.tb_requant_lif", requant_lif_build)
