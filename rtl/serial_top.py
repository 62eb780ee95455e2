"""The accelerator behind an 8N1 UART: the platform-independent part of every board top.

``SerialAccelerator`` is what a board's USB-serial bridge (an FTDI) talks to, and what the cocotb
test ``sim/tb_serial_top.py`` runs in Verilator with a UART model on its pins::

    uart_rx ──> UARTRx(divisor) ──> RX FIFO (fifo_depth bytes) ──> register ──> Accelerator.rx
    uart_tx <── UARTTx(divisor) <────────────────────────────────────────────── Accelerator.tx

Flow control. A UART has none, and :class:`rtl.accelerator.Accelerator` drops ``rx.ready`` while a
finished frame waits for, or runs in, its executor. The RX FIFO absorbs the bytes that arrive
meanwhile. The rule the host keeps (``driver.transport.SerialTransport.max_in_flight_bytes``,
honoured by ``driver.protocol.Device.pipeline``): **the request bytes sent and not yet answered
never exceed ``fifo_depth``**. That is enough: every request whose response has arrived in full has
been taken out of the FIFO, so the FIFO never holds more than the unanswered requests' bytes. The
default depth, the power of two at or above ``max_payload + 16``, also holds the resync sequence of
``docs/protocol.md`` section 2 (``max_payload + 8`` zero bytes, then an 8-byte INFO) whatever state
the receiver is in. A host that sends one request at a time (``Device``'s ordinary methods,
``driver.run``) needs no FIFO at all.

Errors. A byte lost on the line is never silent: ``UARTRx`` flags a bad stop bit (``frame_error``)
and a byte that finds the FIFO full (``overrun``); both are counted here (saturating) and latch the
``error`` output until reset, and the frame that lost the byte is answered ``ERR_CRC`` (or
``ERR_TRUNCATED``) by the accelerator, so the host sees it too.

Status outputs for LEDs: ``heartbeat`` (toggles every ``heartbeat_cycles``: the clock runs and the
design is out of reset), ``activity`` (a byte moved either way in the previous heartbeat period: no
counter of its own) and ``error``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from rtl.accelerator import Accelerator, AcceleratorConfig
from rtl.uart import UARTRx, UARTTx

__all__ = ["SerialAccelerator", "default_fifo_depth"]

ERROR_COUNT_BITS = 16


def default_fifo_depth(max_payload: int) -> int:
    """The RX FIFO depth for a ``max_payload``: the power of two >= ``max_payload + 16`` (one largest
    frame, 8 bytes of overhead, plus 8 more: the resync sequence's INFO)."""
    need = max_payload + 16
    return 1 << (need - 1).bit_length()


class SerialAccelerator(wiring.Component):
    """:class:`~rtl.accelerator.Accelerator` behind a UART at ``divisor`` clock cycles per bit.

    ``config``: an :class:`~rtl.accelerator.AcceleratorConfig` (or its fields as keyword arguments);
    ``fifo_depth``: the RX FIFO (default :func:`default_fifo_depth`); ``heartbeat_cycles``: the
    heartbeat LED's half period (default half a second at ``config.clock_hz``).

    Outputs ``frame_errors`` and ``overruns`` count the UART receiver's bad stop bits and the bytes
    dropped on a full FIFO (saturating at ``2**16 - 1``).
    """

    def __init__(self, config: AcceleratorConfig | None = None, *, divisor: int, fifo_depth: int | None = None,
                 heartbeat_cycles: int | None = None, **fields):
        if config is None:
            config = AcceleratorConfig(**fields)
        elif fields:
            raise TypeError("give an AcceleratorConfig or its fields, not both")
        if divisor < 4:
            raise ValueError(f"divisor (clock cycles per bit) must be >= 4, got {divisor}")
        self.config = config
        self.divisor = divisor
        self.fifo_depth = default_fifo_depth(config.max_payload) if fifo_depth is None else int(fifo_depth)
        if self.fifo_depth < 2:
            raise ValueError(f"fifo_depth must be >= 2, got {self.fifo_depth}")
        self.heartbeat_cycles = max(2, config.clock_hz // 2 if heartbeat_cycles is None else int(heartbeat_cycles))
        super().__init__({
            "uart_rx": In(1, init=1), "uart_tx": Out(1, init=1),
            "heartbeat": Out(1), "activity": Out(1), "error": Out(1),
            "frame_errors": Out(ERROR_COUNT_BITS), "overruns": Out(ERROR_COUNT_BITS),
        })

    @property
    def baud(self) -> float:
        """The line rate at ``config.clock_hz``."""
        return self.config.clock_hz / self.divisor

    def info(self) -> dict[str, int]:
        return self.config.info()

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.uart_rx = urx = UARTRx(self.divisor)
        m.submodules.uart_tx = utx = UARTTx(self.divisor)
        m.submodules.rx_fifo = rxf = fifo.SyncFIFOBuffered(width=8, depth=self.fifo_depth)
        m.submodules.accelerator = acc = Accelerator(**{f: getattr(self.config, f)
                                                        for f in AcceleratorConfig.__dataclass_fields__})

        m.d.comb += [urx.rx.eq(self.uart_rx), self.uart_tx.eq(utx.tx)]
        m.d.comb += [rxf.w_data.eq(urx.out.payload), rxf.w_en.eq(urx.out.valid), urx.out.ready.eq(rxf.w_rdy)]
        # a register between the FIFO's block RAM and the accelerator's frame receiver (the ECP5 block RAM's
        # clock-to-output leaves no time for the receiver's decode behind it); one more byte of buffering
        rx_valid, rx_data = Signal(), Signal(8)
        m.d.comb += rxf.r_en.eq(~rx_valid | acc.rx.ready)
        with m.If(rxf.r_en):
            m.d.sync += [rx_valid.eq(rxf.r_rdy), rx_data.eq(rxf.r_data)]
        m.d.comb += [acc.rx.payload.eq(rx_data), acc.rx.valid.eq(rx_valid)]
        wiring.connect(m, acc.tx, utx.inp)

        # error counters (saturating) and the sticky error flag
        for pulse, count in ((urx.frame_error, self.frame_errors), (urx.overrun, self.overruns)):
            with m.If(pulse & (count != (1 << ERROR_COUNT_BITS) - 1)):
                m.d.sync += count.eq(count + 1)
            with m.If(pulse):
                m.d.sync += self.error.eq(1)

        # heartbeat and activity
        hb = Signal(range(self.heartbeat_cycles))
        seen = Signal()                                 # a byte moved in this heartbeat period
        with m.If((urx.out.valid & urx.out.ready) | (utx.inp.valid & utx.inp.ready)):
            m.d.sync += seen.eq(1)
        with m.If(hb == self.heartbeat_cycles - 1):
            m.d.sync += [hb.eq(0), self.heartbeat.eq(~self.heartbeat), self.activity.eq(seen), seen.eq(0)]
        with m.Else():
            m.d.sync += hb.eq(hb + 1)
        return m
