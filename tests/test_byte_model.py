"""sim.byte_model + driver.transport.VerilatorTransport on a small byte-stream component (real Verilator)."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from driver.protocol import TransportTimeout
from driver.transport import VerilatorTransport
from sim.byte_model import build_byte_model


class XorEcho(wiring.Component):
    """Echoes every byte XOR 0x5A through a one-entry buffer that is busy for ``delay`` cycles per byte."""

    def __init__(self, delay: int = 3):
        self.delay = delay
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        full = Signal()
        data = Signal(8)
        wait = Signal(range(self.delay + 1))
        m.d.comb += [self.rx.ready.eq(~full), self.tx.valid.eq(full & (wait == 0)), self.tx.payload.eq(data),
                     self.busy.eq(full)]
        with m.If(self.rx.valid & self.rx.ready):
            m.d.sync += [full.eq(1), data.eq(self.rx.payload ^ 0x5A), wait.eq(self.delay)]
        with m.Elif(full & (wait != 0)):
            m.d.sync += wait.eq(wait - 1)
        with m.If(self.tx.valid & self.tx.ready):
            m.d.sync += full.eq(0)
        return m


@pytest.fixture(scope="module")
def echo_binary():
    return build_byte_model("xor_echo", XorEcho, {"delay": 3})


def test_round_trip_and_cycles(echo_binary):
    data = bytes(random.Random(1).randrange(256) for _ in range(5000))
    t = VerilatorTransport(echo_binary)
    for lo in range(0, len(data), 700):
        t.write(data[lo:lo + 700])
        assert t.read(min(700, len(data) - lo), timeout=10) == bytes(b ^ 0x5A for b in data[lo:lo + 700])
    t.close()
    assert t.cycles is not None and t.cycles >= 5 * len(data)  # one byte per 5 cycles (3 waiting)


def test_timeout_and_cached_build(echo_binary):
    assert build_byte_model("xor_echo", XorEcho, {"delay": 3}) == echo_binary
    with VerilatorTransport(echo_binary) as t:
        t.write(b"\x01")
        with pytest.raises(TransportTimeout):
            t.read(2, timeout=0.3)  # only one byte comes back
        assert t.read(1, timeout=0.1) == b"\x5b"


def test_not_a_byte_stream_component():
    from rtl.attention import AttentionEngine

    with pytest.raises(ValueError, match="missing ports"):
        build_byte_model("engine", AttentionEngine(dim_max=8))
