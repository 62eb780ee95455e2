"""The board top's logic (``rtl.serial_top.SerialAccelerator``) in Verilator with ``sim/tb_serial_top.py``.

The driver itself (``driver.protocol.Device``) talks to the UART pins through a cocotb UART model at 8
clocks a bit and runs a small real program (weights, parameters, LINEAR, LIF, ATTENTION, COUNTERS, line
faults, resync, pipelined requests under the FIFO limit); every result and the whole response byte
stream equal the golden emulator's. One Verilator build (``sim_build/serial_top-<hash>/``, cached).
"""

from __future__ import annotations

import shutil

import pytest

from sim.verilator import build, run_cocotb

# the small accelerator of tests/test_accelerator_cocotb.py behind a UART at 8 clocks a bit
PARAMS = {"lanes": 4, "in_max": 20, "weight_rows": 90, "param_channels": 40, "membrane_rows": 30,
          "att_dim_max": 12, "att_max_tokens": 40, "max_payload": 160, "frame_timeout": 2000,
          "divisor": 8, "fifo_depth": 256}

_missing = [tool for tool in ("perl", "make") if shutil.which(tool) is None]
if shutil.which("c++") is None and shutil.which("g++") is None:
    _missing.append("c++")
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"Verilator builds need {', '.join(_missing)}")


def test_serial_top_driver_over_uart():
    from rtl.serial_top import SerialAccelerator

    def make():
        p = dict(PARAMS)
        return SerialAccelerator(divisor=p.pop("divisor"), fifo_depth=p.pop("fifo_depth"), heartbeat_cycles=1000, **p)

    run_cocotb("sim.tb_serial_top", build("serial_top", make, PARAMS))
