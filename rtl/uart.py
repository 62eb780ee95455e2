"""8N1 UART receiver and transmitter with byte streams: the board tops' bridge to the host.

``UARTRx(divisor)``: the ``rx`` pin (idle high) -> ``out`` (``stream.Signature(8)``);
``UARTTx(divisor)``: ``inp`` (``stream.Signature(8)``) -> the ``tx`` pin. ``divisor`` is the number
of clock cycles per bit (``clk_hz // baud``, at least 4). One start bit (0), 8 data bits LSB
first, one stop bit (1).

* The receiver synchronises the pin through two flip-flops, detects the start bit's falling edge,
  samples each bit in its middle (``divisor // 2`` cycles after the edge, then every ``divisor``),
  and checks the stop bit: a 0 there is a *framing error* (``frame_error`` pulses, the byte is
  dropped, the receiver waits for the line to go idle again). A start bit that is no longer 0 at
  its middle is a glitch and is ignored. The received byte is offered on ``out`` until taken;
  a byte that completes while the previous one is still untaken is dropped and counted
  (``overrun`` pulses): a UART cannot be held off, so the consumer must keep up (the accelerator's
  receiver takes one byte per cycle, a byte lasts ``10 * divisor`` cycles).
* The transmitter takes a byte when idle and shifts out 10 bits of ``divisor`` cycles each; the
  next byte follows the stop bit without a gap.

The host's rate may differ from ``clk / divisor`` by up to about 4 % (half a bit over 10 bits
minus the synchroniser's two cycles).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx"]


def _check_divisor(component, divisor: int) -> None:
    if divisor < 4:
        component._MustUse__silence = True  # never built: no "created but never used" warning
        raise ValueError(f"divisor (clock cycles per bit) must be >= 4, got {divisor}")


class UARTRx(wiring.Component):
    """8N1 receiver: ``rx`` pin -> ``out`` byte stream; ``frame_error`` / ``overrun`` one-cycle pulses."""

    def __init__(self, divisor: int):
        _check_divisor(self, divisor)
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "out": Out(stream.Signature(8)), "frame_error": Out(1),
                          "overrun": Out(1)})

    def elaborate(self, platform) -> Module:
        m = Module()
        d = self.divisor
        sync1 = Signal(init=1)
        pin = Signal(init=1)
        m.d.sync += [sync1.eq(self.rx), pin.eq(sync1)]
        timer = Signal(range(d + 1))
        bit = Signal(range(10))
        shift = Signal(8)
        m.d.sync += [self.frame_error.eq(0), self.overrun.eq(0)]
        with m.If(self.out.ready):
            m.d.sync += self.out.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~pin):
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(pin):          # not low in the middle: a glitch
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shift.eq(shift >> 1 | pin << 7), timer.eq(d - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(~pin):
                    m.d.sync += self.frame_error.eq(1)
                    m.next = "BREAK"
                with m.Else():
                    with m.If(self.out.valid & ~self.out.ready):
                        m.d.sync += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.out.payload.eq(shift), self.out.valid.eq(1)]
                    m.next = "IDLE"
            with m.State("BREAK"):          # wait for the line to return to idle
                with m.If(pin):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter: ``inp`` byte stream -> ``tx`` pin (idle high)."""

    def __init__(self, divisor: int):
        _check_divisor(self, divisor)
        self.divisor = divisor
        super().__init__({"inp": In(stream.Signature(8)), "tx": Out(1, init=1), "busy": Out(1)})

    def elaborate(self, platform) -> Module:
        m = Module()
        d = self.divisor
        frame = Signal(10, init=0x3FF)       # stop, data[7:0], start: shifted out LSB first
        bits = Signal(range(11))
        timer = Signal(range(d))
        last = (bits == 1) & (timer == 0)     # the stop bit's final cycle: the next byte may start
        m.d.comb += [self.inp.ready.eq((bits == 0) | last), self.tx.eq(frame[0]), self.busy.eq(bits != 0)]
        with m.If(self.inp.valid & self.inp.ready):
            m.d.sync += [frame.eq(1 << 9 | self.inp.payload << 1), bits.eq(10), timer.eq(d - 1)]
        with m.Elif(bits != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [frame.eq(frame >> 1 | 1 << 9), bits.eq(bits - 1), timer.eq(d - 1)]
        return m
