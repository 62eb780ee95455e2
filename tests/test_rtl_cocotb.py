"""RTL simulations in Verilator with cocotb testbenches (``sim/tb_*.py``).

Each configuration is converted and compiled once per pytest session (session-scoped fixtures;
``sim_build/<name>-<hash>/`` is reused across sessions while its Verilog is unchanged); each
pytest test runs one or more cocotb tests of a testbench module against it.
"""

from __future__ import annotations

import os

import pytest

from sim.verilator import CocotbFailure, build, run_cocotb

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
    assert selftest_build.build_dir.parent.name == "sim_build"


def test_selftest_failure_reaches_pytest(selftest_build, monkeypatch):
    monkeypatch.delenv("SPIKEVID_SELFTEST_FAIL", raising=False)
    with pytest.raises(CocotbFailure, match="intentional failure"):
        run_cocotb("sim.tb_selftest", selftest_build, testcase="test_must_fail",
                   extra_env={"SPIKEVID_SELFTEST_FAIL": "1"})
    assert "SPIKEVID_SELFTEST_FAIL" not in os.environ
