"""Self-test of the verification infrastructure (``sim.verilator``, ``sim.streams``).

A small Amaranth component, :class:`PairAdder`, sums the two signed fields of each input beat
and passes the result through a FIFO to a multi-lane output stream; its cocotb tests check
exact, in-order, loss-free delivery under random idle and backpressure, the stream-rule
checker, and that a failing cocotb test reaches pytest as a failure.
"""

from __future__ import annotations

import os
import random

import cocotb
from amaranth import Module, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from sim.streams import ClockLoop, StreamMonitor, StreamSink, StreamSource, payload_layout, random_pauses
from sim.verilator import tb_params

IN_LAYOUT = data.StructLayout({"a": signed(8), "b": signed(8), "tag": 5})


class PairAdder(wiring.Component):
    """``out.data[l] = (a + b) * (l + 1)`` for each lane ``l``, ``out.tag = tag``; a FIFO of ``depth``."""

    def __init__(self, *, lanes: int = 3, depth: int = 4):
        self.lanes = lanes
        self.depth = depth
        self.out_layout = data.StructLayout({"data": data.ArrayLayout(signed(12), lanes), "tag": 5})
        super().__init__({
            "inp": In(stream.Signature(IN_LAYOUT)),
            "out": Out(stream.Signature(self.out_layout)),
            "count": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=self.out_layout.size, depth=self.depth)
        beat = data.View(self.out_layout, q.w_data)
        for lane in range(self.lanes):
            m.d.comb += beat.data[lane].eq((self.inp.payload.a + self.inp.payload.b) * (lane + 1))
        m.d.comb += [
            beat.tag.eq(self.inp.payload.tag),
            q.w_en.eq(self.inp.valid),
            self.inp.ready.eq(q.w_rdy),
            self.out.payload.eq(q.r_data),
            self.out.valid.eq(q.r_rdy),
            q.r_en.eq(self.out.ready),
        ]
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += self.count.eq(self.count + 1)
        return m


def reference(beat: dict, lanes: int) -> dict:
    return {"data": [(beat["a"] + beat["b"]) * (lane + 1) for lane in range(lanes)], "tag": beat["tag"]}


async def _setup(dut, seed: int, idle: float, backpressure: float):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    comp = PairAdder(**tb_params())
    loop = ClockLoop(dut.clk)
    src = StreamSource(dut, "inp", payload_layout(comp, "inp"), loop, random_pauses(seed, idle, burst=4))
    mon = StreamMonitor(dut, "inp", payload_layout(comp, "inp"), loop)
    sink = StreamSink(dut, "out", payload_layout(comp, "out"), loop, random_pauses(seed + 1, backpressure, burst=6))
    seen: list = []
    mon.add_callback(seen.append)
    src.seen = seen  # what the DUT accepted, decoded from its ports
    return comp, src, sink


@cocotb.test()
async def test_stream_exact(dut):
    """Random beats under random idle and backpressure: all delivered, in order, exactly once."""
    for seed, idle, bp in ((1, 0.0, 0.0), (2, 0.3, 0.5), (3, 0.7, 0.2), (4, 0.1, 0.9)):
        if seed > 1:
            dut.rst.value = 1
            await ClockCycles(dut.clk, 2)
            dut.rst.value = 0
        else:
            comp, src, sink = await _setup(dut, seed, idle, bp)
        src.set_pauses(random_pauses(seed, idle, burst=4))
        sink.set_pauses(random_pauses(seed + 100, bp, burst=6))
        rng = random.Random(seed)
        beats = [{"a": rng.randint(-128, 127), "b": rng.randint(-128, 127), "tag": rng.randrange(32)}
                 for _ in range(200)]
        for b in beats:
            src.send_nowait(b)
        got = [await sink.recv(timeout_ns=100_000) for _ in beats]
        await ClockCycles(dut.clk, 20)
        assert len(sink) == 0, "extra beats"
        expected = [reference(b, comp.lanes) for b in beats]
        assert got == expected
        assert src.seen[-len(beats):] == beats  # the input monitor decodes what was sent
        assert sink.protocol_errors == []
    assert dut.count.value.to_unsigned() == 200  # counter since the last reset


@cocotb.test()
async def test_edge_sampling(dut):
    """A beat sent into an idle, ready pipeline shows up after the FIFO latency; counter matches."""
    comp, src, sink = await _setup(dut, 5, 0.0, 0.0)
    src.send_nowait({"a": -128, "b": -128, "tag": 31})
    beat = await sink.recv(timeout_ns=1000)
    assert beat == {"data": [-256 * (lane + 1) for lane in range(comp.lanes)], "tag": 31}
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    assert dut.count.value.to_unsigned() == 1
    assert src.transfers == 1 and sink.transfers == 1


@cocotb.test(skip=os.environ.get("SPIKEVID_SELFTEST_FAIL") != "1")
async def test_must_fail(dut):
    """Deliberately wrong expectation (only when the pytest wrapper asks for it)."""
    comp, src, sink = await _setup(dut, 6, 0.2, 0.2)
    src.send_nowait({"a": 1, "b": 2, "tag": 0})
    beat = await sink.recv(timeout_ns=1000)
    assert beat["data"][0] == 4, "intentional failure"
