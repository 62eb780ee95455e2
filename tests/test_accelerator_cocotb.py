"""The accelerator top (``rtl.accelerator``) in Verilator with the cocotb testbench ``sim/tb_accelerator.py``.

One build per configuration and pytest session (``sim_build/accelerator-<hash>/``, reused across sessions
while its Verilog is unchanged); one pytest test per configuration runs every cocotb test of the
testbench against it: responses byte for byte against ``driver.emulator``, results against
``golden_model.intops``. The quick pysim tests of the frame units are ``tests/test_accelerator.py``.
"""

from __future__ import annotations

import shutil

import pytest

from sim.verilator import build, run_cocotb

# The default sizes (P = 16, in_max = 256, 1024 weight rows, D_MAX = 32 ...) with a short frame timeout,
# and a small configuration with other sizes (P = 4, sizes that are not powers of two).
CONFIGS = {
    "default": {"frame_timeout": 3000},
    "small": {"lanes": 4, "in_max": 20, "weight_rows": 90, "param_channels": 40, "membrane_rows": 30,
              "att_dim_max": 12, "att_max_tokens": 40, "max_payload": 160, "frame_timeout": 400},
}

_missing = [tool for tool in ("perl", "make") if shutil.which(tool) is None]
if shutil.which("c++") is None and shutil.which("g++") is None:
    _missing.append("c++")
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"Verilator builds need {', '.join(_missing)}")


@pytest.fixture(scope="session", params=list(CONFIGS))
def accelerator_build(request):
    from rtl.accelerator import Accelerator

    params = CONFIGS[request.param]
    return build("accelerator", lambda: Accelerator(**params), params)


def test_accelerator(accelerator_build):
    """All cocotb tests of sim/tb_accelerator.py in one simulator run per configuration.

    Frame errors (garbage, CRC, version, opcode, lengths, truncation, resync), the write ops and their
    range checks, LINEAR / LIF / ATTENTION on seeded random data with every out_bits, their error cases
    in the protocol's check order, a hardware reset in the middle of a frame, and pipelined mixed traffic
    under heavy idle / backpressure. A failure names the failing cocotb tests; run one alone with
    ``run_cocotb("sim.tb_accelerator", build, testcase=...)``.
    """
    run_cocotb("sim.tb_accelerator", accelerator_build)
