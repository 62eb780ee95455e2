"""rtl.uart: 8N1 receiver and transmitter (Amaranth pysim), bit timing, errors, a loopback."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from rtl.uart import UARTRx, UARTTx


def _bits(byte: int, stop: int = 1) -> list[int]:
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


@pytest.mark.parametrize("divisor,skew", [(8, 1.0), (16, 0.97), (16, 1.03), (5, 1.0)])
def test_rx_bytes_at_rate_skew(divisor, skew):
    """Bytes sent at divisor * skew cycles per bit arrive intact; a bad stop bit is a framing error."""
    rng = random.Random(divisor)
    data = [rng.randrange(256) for _ in range(24)] + [0x00, 0xFF]
    bad = 13  # this byte is sent with a 0 stop bit
    dut = UARTRx(divisor)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    got, errors = [], []

    async def line(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(7)
        t = 0.0
        for i, b in enumerate(data):
            for level in _bits(b, stop=0 if i == bad else 1) + [1] * (3 if i == bad else 0):
                ctx.set(dut.rx, level)
                t += divisor * skew
                n = int(round(t))
                t -= n
                await ctx.tick().repeat(n)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(4 * divisor)

    async def sink(ctx):
        ctx.set(dut.out.ready, 1)
        async for _, _, valid, payload, ferr in ctx.tick().sample(dut.out.valid, dut.out.payload, dut.frame_error):
            if valid:
                got.append(payload)
            if ferr:
                errors.append(len(got))

    sim.add_testbench(line)
    sim.add_process(sink)
    sim.run_until(1e-8 * (len(data) * 14 * divisor + 200))
    assert got == data[:bad] + data[bad + 1:]
    assert errors == [bad]


def test_rx_glitch_and_overrun():
    d = 8
    dut = UARTRx(d)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    seen = {}

    async def tb(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(5)
        ctx.set(dut.rx, 0)          # a 2-cycle glitch: no start bit
        await ctx.tick().repeat(2)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3 * d)
        assert not ctx.get(dut.out.valid)
        for b in (0x41, 0x42):      # two bytes, nobody takes the first: the second overruns
            for level in _bits(b):
                ctx.set(dut.rx, level)
                await ctx.tick().repeat(d)
        await ctx.tick().repeat(2 * d)
        assert ctx.get(dut.out.valid) and ctx.get(dut.out.payload) == 0x41

    async def watch(ctx):
        async for _, _, ov in ctx.tick().sample(dut.overrun):
            if ov:
                seen["pulsed"] = True

    sim.add_testbench(tb)
    sim.add_process(watch)
    sim.run_until(1e-8 * 40 * d)
    assert seen.get("pulsed"), "the second byte did not overrun"


@pytest.mark.parametrize("divisor", [4, 11])
def test_tx_then_rx_loopback(divisor):
    """UARTTx -> UARTRx: every byte comes back, back to back frames, exactly 10 bits per byte."""
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor)
    m.submodules.rx = rx = UARTRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    data = list(range(0, 256, 7)) + [0xFF, 0x00]
    sim = Simulator(m)
    sim.add_clock(1e-8)
    got, times = [], []

    async def source(ctx):
        for b in data:
            ctx.set(tx.inp.payload, b)
            ctx.set(tx.inp.valid, 1)
            await ctx.tick().until(tx.inp.ready)
        ctx.set(tx.inp.valid, 0)

    async def sink(ctx):
        ctx.set(rx.out.ready, 1)
        cycle = 0
        async for _, _, valid, payload in ctx.tick().sample(rx.out.valid, rx.out.payload):
            cycle += 1
            if valid:
                got.append(payload)
                times.append(cycle)

    sim.add_testbench(source)
    sim.add_process(sink)
    sim.run_until(1e-8 * (len(data) * 10 * divisor + 100))
    assert got == data
    assert all(b - a == 10 * divisor for a, b in zip(times, times[1:], strict=False))


def test_divisor_too_small():
    with pytest.raises(ValueError, match="divisor"):
        UARTTx(3)
