"""cocotb testbench of ``rtl.serial_top.SerialAccelerator``: the board top's logic behind its UART pins.

The host is the real driver: a :class:`driver.protocol.Device` over :class:`UartTransport`, a
``driver.transport.Transport`` whose bytes go through a cocotb UART model on ``uart_rx`` / ``uart_tx``
(8N1 at the top's divisor, the blocking driver calls bridged into the simulation with
``cocotb.task.bridge`` / ``resume``). The same calls run on a second ``Device`` over the golden
emulator (``driver.emulator``); every result (INFO, LINEAR, LIF, ATTENTION records, COUNTERS) must be
equal, and the whole response byte stream off ``uart_tx`` must equal the emulator's frame for frame
(:func:`sim.accel_frames.compare_responses`: the starved / blocked counter words excepted).

Line faults: garbage bytes between frames (counted by both), a byte with a bad stop bit (dropped by the
UART receiver and counted in ``frame_errors``; the emulator never sees it), a frame with a damaged CRC
(``ERR_CRC`` from both), a cut-off frame and the driver's resync procedure; ``Device.pipeline`` with the
transport's ``max_in_flight_bytes`` = the RX FIFO depth never overruns the FIFO (``overruns == 0``).

Configuration (``SerialAccelerator`` keyword arguments) from the pytest wrapper via
:func:`sim.verilator.tb_params`: the accelerator's fields plus ``divisor`` and ``fifo_depth``.
"""

from __future__ import annotations

import random

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, FallingEdge

import driver.protocol as pr
from driver.attention import encode_window
from driver.emulator import Emulator
from driver.transport import EmulatorTransport, Transport, TransportTimeout
from golden_model import intops
from rtl.accelerator import AcceleratorConfig
from sim.accel_frames import compare_responses, emulator_config, req_write_params, weight_rows
from sim.verilator import tb_params

PARAMS = tb_params()
DIV = PARAMS.pop("divisor")
FIFO_DEPTH = PARAMS.pop("fifo_depth")
CFG = AcceleratorConfig(**PARAMS)
P = CFG.lanes
READ_LIMIT_CYCLES = 3_000_000      # a read that gets nothing for this long times out (simulated time)


class UartTransport(Transport):
    """The driver's transport over the DUT's UART pins (call only from a ``bridge`` thread)."""

    def __init__(self, dut, divisor: int, max_in_flight_bytes: int | None = None):
        self.dut = dut
        self.div = divisor
        self.max_in_flight_bytes = max_in_flight_bytes
        self.rx = bytearray()          # received, not yet read
        self.log = bytearray()         # every byte received
        self.sent = 0
        dut.uart_rx.value = 1
        self._monitor = cocotb.start_soon(self._receive())

    async def _receive(self) -> None:
        dut, d = self.dut, self.div
        while True:
            await FallingEdge(dut.uart_tx)
            await ClockCycles(dut.clk, d // 2)
            assert int(dut.uart_tx.value) == 0, "start bit not low in its middle"
            byte = 0
            for i in range(8):
                await ClockCycles(dut.clk, d)
                byte |= int(dut.uart_tx.value) << i
            await ClockCycles(dut.clk, d)
            assert int(dut.uart_tx.value) == 1, "stop bit"
            self.rx.append(byte)
            self.log.append(byte)

    async def send_bits(self, bits: list[int]) -> None:
        for level in bits:
            self.dut.uart_rx.value = level
            await ClockCycles(self.dut.clk, self.div)
        self.dut.uart_rx.value = 1

    async def _send(self, data: bytes, gap: int) -> None:
        for byte in data:
            await self.send_bits([0] + [(byte >> i) & 1 for i in range(8)] + [1])
            if gap:
                await ClockCycles(self.dut.clk, gap)
        self.sent += len(data)

    async def _read(self, n: int) -> bytes:
        idle = 0
        have = len(self.rx)
        while len(self.rx) < n:
            await ClockCycles(self.dut.clk, 10 * self.div)
            idle = 0 if len(self.rx) != have else idle + 10 * self.div
            have = len(self.rx)
            if idle > READ_LIMIT_CYCLES:
                raise TransportTimeout(f"{len(self.rx)} of {n} bytes, the line idle for {idle} cycles")
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    def write(self, data: bytes, gap: int = 0) -> None:
        resume(self._send)(bytes(data), gap)

    def read(self, n: int, timeout: float) -> bytes:
        return resume(self._read)(n)

    def reset_input(self) -> None:
        self.rx.clear()

    def bad_byte(self, byte: int) -> None:
        """One character with a 0 stop bit (and a bit time of idle): the receiver must drop it."""
        resume(self.send_bits)([0] + [(byte >> i) & 1 for i in range(8)] + [0, 1])


class Both:
    """The same driver calls on the RTL (over the UART) and on the emulator; results must be equal."""

    def __init__(self, uart: UartTransport):
        self.uart = uart
        self.emu_t = EmulatorTransport(Emulator(emulator_config(PARAMS)))
        self.emu_log = bytearray()
        self._wrap_emulator()
        self.rtl = pr.Device(uart, timeout=3600)
        self.ref = pr.Device(self.emu_t, timeout=3600)
        self.calls = 0

    def _wrap_emulator(self) -> None:
        t, log = self.emu_t, self.emu_log
        read_output = t.emulator.read_output

        def read_output_logged() -> bytes:
            out = read_output()
            log.extend(out)
            return out

        t.emulator.read_output = read_output_logged

    def call(self, name: str, *args, **kw):
        """``Device.<name>(...)`` on both; returns the RTL's result after checking it equals the emulator's."""
        self.calls += 1
        outs = []
        for dev in (self.rtl, self.ref):
            try:
                outs.append(("ok", getattr(dev, name)(*args, **kw)))
            except pr.DeviceError as e:
                outs.append(("error", e.code))
        (kr, r), (ke, e) = outs
        assert kr == ke, f"{name}: rtl {kr} {r!r}, emulator {ke} {e!r}"
        if name == "pipeline":
            for (op, _), gr, ge in zip(args[0], r, e, strict=True):
                if op == pr.OP_COUNTERS:
                    gr, ge = (dict(zip(pr.COUNTER_NAMES, pr.COUNTERS_FORMAT.unpack(d), strict=True)) for d in (gr, ge))
                    gr = {k: v for k, v in gr.items() if "starved" not in k and "blocked" not in k}
                    ge = {k: v for k, v in ge.items() if "starved" not in k and "blocked" not in k}
                assert gr == ge, f"pipeline op {op:#x}: rtl {gr!r}, emulator {ge!r}"
        elif isinstance(r, torch.Tensor):
            assert torch.equal(r, e), f"{name}: rtl\n{r}\nemulator\n{e}"
        elif name == "counters":
            diff = {k: (r[k], e[k]) for k in r if "starved" not in k and "blocked" not in k and r[k] != e[k]}
            assert not diff, f"counters differ (rtl, emulator): {diff}"
        else:
            assert r == e, f"{name}: rtl {r!r}, emulator {e!r}"
        return r

    def raw(self, data: bytes) -> None:
        """Bytes outside the driver's framing, to both."""
        self.uart.write(data)
        self.emu_t.write(data)

    def check_streams(self) -> list[pr.Frame]:
        self.emu_t.emulator.read_output()
        problems, frames = compare_responses(bytes(self.uart.log), bytes(self.emu_log))
        assert not problems, "\n".join(problems[:6])
        return frames


def program(both: Both, seed: int) -> dict:
    """A small real program through the driver: RESET, weights, parameters, LINEAR, LIF, ATTENTION, COUNTERS,
    with line faults in between. Runs in a bridge thread (blocking driver calls)."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    info = both.call("info")
    assert info == pr.DeviceInfo(**CFG.info()), info
    both.call("reset")
    # LINEAR: c_in -> c_out with int8 weights; requant parameters on c_out channels
    c_in, c_out, tokens = min(CFG.in_max, 20), min(CFG.param_channels // 2, 2 * P + 1), 6
    w = torch.randint(-128, 128, (c_out, c_in), generator=gen, dtype=torch.int8)
    rows = weight_rows(w, P)
    both.call("write_weights", 0, rows)
    m = torch.randint(-300, 300, (CFG.param_channels,), generator=gen, dtype=torch.int32)
    s = torch.randint(1, 10, (CFG.param_channels,), generator=gen, dtype=torch.int32)
    b = torch.randint(-100, 100, (CFG.param_channels,), generator=gen, dtype=torch.int32)
    both.call("write_params", 0, m, s, b)
    x = (torch.rand(tokens, c_in, generator=gen) < 0.3).to(torch.int8)
    for out_bits in (8, 16, 32):
        y = both.call("linear", x, c_out=c_out, w_base=0, p_base=0, out_bits=out_bits)
        want = intops.requant(intops.linear_int8(x, w), m[:c_out], s[:c_out], b[:c_out], out_bits)
        assert torch.equal(y, want), f"LINEAR out_bits {out_bits}: device != golden"
    # garbage and a byte with a bad stop bit between frames
    both.raw(bytes(rng.choice((0x00, 0x13, 0x5A, 0xFF)) for _ in range(7)))
    both.uart.bad_byte(0xA5)
    # LIF: two time steps
    both.call("write_lif", 3, 2, 100)
    y0 = torch.randint(-300, 300, (4, c_out), generator=gen, dtype=torch.int32)
    y1 = torch.randint(-300, 300, (4, c_out), generator=gen, dtype=torch.int32)
    s0 = both.call("lif", y0, neuron=0, first=True)
    s1 = both.call("lif", y1, neuron=0, first=False)
    g0, v = intops.lif_step(torch.zeros_like(y0), y0, 3, 2, 100)
    g1, _ = intops.lif_step(v, y1, 3, 2, 100)
    assert torch.equal(s0, g0) and torch.equal(s1, g1), "LIF: device != golden"
    # ATTENTION: one Hamming and one dot window, dim = D_MAX
    dim = CFG.att_dim_max
    for mode in ("hamming", "dot"):
        n = min(CFG.att_max_tokens, 6)
        k = (torch.rand(n, dim, generator=gen) < 0.4).to(torch.int8)
        v = (torch.rand(n, dim, generator=gen) < 0.4).to(torch.int8)
        q = (torch.rand(4, dim, generator=gen) < 0.4).to(torch.int8)
        both.call("attention", encode_window(k, v, q, mode), mode=mode, dim=dim, tokens=n, p_base=0, out_bits=8)
    # a damaged frame: ERR_CRC from both; then a cut-off frame and the driver's resync
    for dev in (both.rtl, both.ref):
        bad = bytearray(pr.encode_frame(pr.OP_INFO, 0xEE))
        bad[-1] ^= 0x40
        dev.transport.write(bytes(bad))
        f = dev.receive(pr.OP_INFO, 0xEE)
        assert f.status == pr.ERR_CRC, f.status
    both.raw(pr.encode_frame(pr.OP_LINEAR, 0x99, bytes(30))[:17])
    both.call("resync")
    # pipelined writes, more bytes than the RX FIFO holds: the transport's limit keeps it from overflowing
    reqs = [(pr.OP_WRITE_PARAMS, req_write_params(lo, m[lo:lo + 8], s[lo:lo + 8], b[lo:lo + 8]))
            for lo in range(0, CFG.param_channels, 8)]
    reqs += [(pr.OP_INFO, b""), (pr.OP_COUNTERS, b"")] * 3
    assert sum(len(p) + pr.FRAME_OVERHEAD for _, p in reqs) > FIFO_DEPTH
    both.call("pipeline", reqs)
    y = both.call("linear", x, c_out=c_out, w_base=0, p_base=0, out_bits=16)
    assert torch.equal(y, intops.requant(intops.linear_int8(x, w), m[:c_out], s[:c_out], b[:c_out], 16))
    return both.call("counters")


@cocotb.test(timeout_time=4000, timeout_unit="ms")
async def test_driver_over_uart(dut):
    """A small real program through driver.protocol.Device over the UART pins == the emulator, bit-exact."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.uart_rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2 * max(CFG.weight_rows, CFG.param_channels, CFG.membrane_rows))  # power-on sweep
    uart = UartTransport(dut, DIV, max_in_flight_bytes=FIFO_DEPTH)
    both = Both(uart)
    counters = await bridge(program)(both, 5)
    await ClockCycles(dut.clk, 20 * DIV)
    frames = both.check_streams()
    assert int(dut.frame_errors.value) == 1, int(dut.frame_errors.value)
    assert int(dut.overruns.value) == 0, int(dut.overruns.value)
    assert int(dut.error.value) == 1
    dut._log.info(f"{len(frames)} response frames, {uart.sent} request bytes, counters {counters}")
