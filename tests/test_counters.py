"""``rtl.counters.EventCounters`` in Amaranth pysim against a plain Python count.

Random increments up to each counter's maximum every cycle, random clears and random reads (never two
strobes in consecutive cycles, the block's contract; reads of one counter back to back, every fourth
cycle as the accelerator's COUNTERS op does, and at random); every read must equal the exact count up
to the end of the strobe cycle (that cycle's increments included), and the totals wrap at ``width`` bits.
"""

from __future__ import annotations

import gc
import random
import warnings

import pytest
from amaranth.hdl import ResetInserter, Signal, UnusedElaboratable
from amaranth.sim import Simulator

from rtl.counters import EventCounters, pending_width


def run_counters(max_incs, *, width: int, cycles: int, seed: int, p_clear: float, p_read: float,
                 p_reset: float = 0.0) -> int:
    """Drive the block for ``cycles`` cycles; returns the number of reads checked (all compared exactly).
    ``p_reset``: the chance of a one-cycle synchronous reset (the totals memory keeps its words, every
    counter must read as 0 plus what came after)."""
    rng = random.Random(seed)
    dut = EventCounters(max_incs, width=width)
    rst = Signal()
    n = len(max_incs)
    checked = 0

    async def bench(ctx):
        nonlocal checked
        counts = [0] * n
        last_strobe = False
        pending_read = None                 # (index, expected) of a strobe in the previous cycle
        script = []                          # a burst of strobes every 4th cycle, like COUNTERS
        for cyc in range(cycles):
            incs = [rng.randint(0, mi) if rng.random() < 0.7 else mi for mi in max_incs]
            clear = rng.random() < p_clear
            reset = rng.random() < p_reset
            strobe = False
            if not last_strobe and not reset:
                if script:
                    strobe, idx = script.pop(0)
                elif rng.random() < p_read:
                    strobe, idx = True, rng.randrange(n)
                elif rng.random() < 0.02:
                    script = [(k % 4 == 0, k // 4) for k in range(4 * n)][:-3]
            for k in range(n):
                ctx.set(dut.inc[k], incs[k])
            ctx.set(dut.clear, clear)
            ctx.set(rst, reset)
            ctx.set(dut.rd_strobe, strobe)
            if strobe:
                ctx.set(dut.rd_index, idx)
            if pending_read is not None:
                k, want = pending_read
                got = ctx.get(dut.rd_value)
                assert got == want, f"cycle {cyc}: counter {k} read {got}, want {want}"
                checked += 1
            if clear or reset:
                counts = [0] * n
                script = [] if reset else script
            else:
                counts = [c + i for c, i in zip(counts, incs, strict=True)]
            # a read answers with the count up to the end of its strobe cycle (a clear in it: 0)
            pending_read = (idx, counts[idx] % (1 << width)) if strobe else None
            last_strobe = strobe
            await ctx.tick()

    sim = Simulator(ResetInserter(rst)(dut))
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return checked


@pytest.mark.parametrize("seed", [1, 2])
def test_event_counters_random(seed):
    """16 counters like the accelerator's (1-bit events, a P-wide one, a wide byte count, a constant 0)."""
    max_incs = [1, 1, 1, 1, 265, 1, 1, 1, 1, 16, 0, 1, 1, 64, 16, 1]
    assert run_counters(max_incs, width=32, cycles=3000, seed=seed, p_clear=0.003, p_read=0.15) > 300


def test_event_counters_reset():
    """A synchronous reset mid-run: the memory keeps the old totals, yet every counter restarts from 0."""
    max_incs = [1, 16, 1, 0, 5]
    assert run_counters(max_incs, width=32, cycles=3000, seed=4, p_clear=0.002, p_read=0.2, p_reset=0.01) > 300


def test_event_counters_wrap():
    """Narrow totals wrap modulo 2**width; three counters (a non-power-of-two sweep)."""
    assert run_counters([3, 7, 1], width=9, cycles=2000, seed=3, p_clear=0.0, p_read=0.3) > 300


def test_event_counters_config_errors():
    with warnings.catch_warnings():                      # the half-made components are never elaborated
        warnings.simplefilter("ignore", UnusedElaboratable)
        for bad, match in (([], "at least one"), ([1, -1], ">= 0")):
            with pytest.raises(ValueError, match=match):
                EventCounters(bad)
        with pytest.raises(ValueError, match="width"):
            EventCounters([1], width=0)
        gc.collect()
    assert pending_width(16, 1) == 6 and pending_width(16, 0) == 1
