"""Spike-accumulate engine in Verilator with the cocotb testbench ``sim/tb_spike_accum.py``.

Each configuration is converted and compiled once per pytest session (``sim_build/spike_accum-<hash>/``
is reused across sessions while its Verilog is unchanged); one pytest test per configuration runs all
cocotb tests of the testbench against it. The quick Amaranth-pysim tests are ``tests/test_spike_accum.py``.
"""

from __future__ import annotations

import shutil

import pytest

from sim.verilator import build, run_cocotb

# A realistic configuration (C_IN_MAX = 256, P = 16 lanes, the 1024 rows of a 256 x 64 layer) and a
# small one with sizes that are not powers of two.
CONFIGS = {
    "realistic": {"in_max": 256, "lanes": 16, "weight_rows": 1024},
    "small": {"in_max": 24, "lanes": 4, "weight_rows": 100},
}
TRACE_MODELS = ["svformer-tiny", "spikevideoformer-tiny"]  # those with a shipped checkpoint

_missing = [tool for tool in ("perl", "make") if shutil.which(tool) is None]
if shutil.which("c++") is None and shutil.which("g++") is None:
    _missing.append("c++")
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"Verilator builds need {', '.join(_missing)}")


@pytest.fixture(scope="session", params=list(CONFIGS))
def spike_accum_build(request):
    from rtl.spike_accum import SpikeAccumulator

    params = CONFIGS[request.param]
    return build("spike_accum", lambda: SpikeAccumulator(**params), params)


@pytest.fixture(scope="session")
def layer_traces_file(tmp_path_factory):
    """Real spike-input layers of the shipped tiny models, traced in this session (sim/layer_traces.py)."""
    from sim.layer_traces import save_layer_traces
    from sim.traces import shipped

    assert shipped("svformer-tiny")
    return save_layer_traces(TRACE_MODELS, tmp_path_factory.mktemp("layers") / "spike_layers.pt")


def test_spike_accum(spike_accum_build, layer_traces_file):
    """All cocotb tests of sim/tb_spike_accum.py in one simulator run per configuration.

    Densities 0..100 %, extreme weights (|acc| = 128 * C_IN_MAX), two resident layers with double
    buffering, c_in = 1 and whole-memory layers, output tiling, random skips, every error code with
    recovery, long output stalls, the cycle model, and the real layers of the shipped models. A failure
    names the failing cocotb tests; run one alone with ``run_cocotb(..., testcase=...)``.
    """
    run_cocotb("sim.tb_spike_accum", spike_accum_build, extra_env={"SPIKEVID_TB_LAYERS": str(layer_traces_file)})
