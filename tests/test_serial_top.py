"""rtl.serial_top.SerialAccelerator in Amaranth pysim: the accelerator behind a UART, bit-banged at 4 clocks a bit.

The responses read off ``uart_tx`` equal ``driver.emulator``'s for the same request bytes (INFO, garbage,
a framing error between frames, pipelined requests held in the RX FIFO); a FIFO too small for the
host's pipelining is never silent (``overruns``, ``error``, and the damaged frame is answered). The
full-protocol test over the UART pins is the Verilator one, ``tests/test_serial_top_cocotb.py``.
"""

from __future__ import annotations

import pytest
from amaranth.sim import Simulator

import driver.protocol as pr
from driver.emulator import Emulator
from rtl.serial_top import SerialAccelerator, default_fifo_depth
from sim.accel_frames import compare_responses, emulator_config

SMALL = {"lanes": 4, "in_max": 24, "weight_rows": 40, "param_channels": 24, "membrane_rows": 20, "att_dim_max": 8,
         "att_max_tokens": 12, "max_payload": 96, "frame_timeout": 800}
DIV = 4


def uart_bits(byte: int, stop: int = 1) -> list[int]:
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


def run_serial(script: list, *, fifo_depth: int | None = None, max_cycles: int = 60_000):
    """Drive ``script`` onto ``uart_rx`` (bytes; ``("bad", byte)``: a 0 stop bit; ``("idle", bits)``;
    ``("quiet", cycles)``: wait until ``uart_tx`` has been idle that long), collect the ``uart_tx``
    bytes until the line has been quiet for 2000 cycles. Returns (bytes, counters and flag at the end)."""
    dut = SerialAccelerator(divisor=DIV, fifo_depth=fifo_depth, heartbeat_cycles=500, **SMALL)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    got = bytearray()
    state = {}
    last = [0]          # the cycle of the last received byte
    now = [0]

    async def wait_quiet(ctx, cycles: int) -> None:
        while now[0] - last[0] < cycles:
            await ctx.tick().repeat(100)

    async def line(ctx):
        ctx.set(dut.uart_rx, 1)
        await ctx.tick().repeat(200)           # the accelerator's power-on sweep
        for item in script:
            if isinstance(item, tuple) and item[0] == "quiet":
                await wait_quiet(ctx, item[1])
                continue
            if isinstance(item, tuple) and item[0] == "idle":
                bits = [1] * item[1]
            elif isinstance(item, tuple):
                bits = uart_bits(item[1], stop=0) + [1]
            else:
                bits = [b for byte in item for b in uart_bits(byte)]
            for level in bits:
                ctx.set(dut.uart_rx, level)
                await ctx.tick().repeat(DIV)
        ctx.set(dut.uart_rx, 1)
        last[0] = now[0]
        await wait_quiet(ctx, 2000)
        state.update(frame_errors=ctx.get(dut.frame_errors), overruns=ctx.get(dut.overruns),
                     error=ctx.get(dut.error))

    async def monitor(ctx):
        while not state:
            await ctx.tick()
            now[0] += 1
            if ctx.get(dut.uart_tx):
                continue
            await ctx.tick().repeat(DIV // 2)
            assert ctx.get(dut.uart_tx) == 0
            byte = 0
            for i in range(8):
                await ctx.tick().repeat(DIV)
                byte |= ctx.get(dut.uart_tx) << i
            await ctx.tick().repeat(DIV)
            assert ctx.get(dut.uart_tx) == 1, "stop bit"
            now[0] += DIV // 2 + 9 * DIV
            got.append(byte)
            last[0] = now[0]

    sim.add_testbench(line)
    sim.add_testbench(monitor)
    sim.run_until(1e-8 * max_cycles)
    assert state, f"the line was not quiet within {max_cycles} cycles"
    return bytes(got), state


def emulate(script: list, params: dict = SMALL) -> bytes:
    emu = Emulator(emulator_config(params))
    for item in script:
        if not isinstance(item, tuple):
            emu.feed(bytes(item))
    return emu.read_output()


def test_default_fifo_depth():
    assert default_fifo_depth(1024) == 2048 and default_fifo_depth(96) == 128 and default_fifo_depth(240) == 256


def test_info_round_trip_garbage_framing_error_pipelined():
    """INFO over the pins; garbage and a bad stop bit between frames change nothing; five pipelined
    requests (the RX FIFO holds them while responses go out) answer in order, byte-exact."""
    script = [pr.encode_frame(pr.OP_INFO, 1), b"\x00\x13\xff", ("bad", 0x42), ("idle", 3),
              pr.encode_frame(pr.OP_COUNTERS, 2),
              pr.encode_frame(pr.OP_INFO, 3) + pr.encode_frame(pr.OP_INFO, 4) + pr.encode_frame(pr.OP_CLEAR_COUNTERS, 5)
              + pr.encode_frame(pr.OP_INFO, 6) + pr.encode_frame(pr.OP_COUNTERS, 7)]
    want = emulate(script)
    got, state = run_serial(script)
    problems, frames = compare_responses(got, want)
    assert not problems, problems
    assert [f.tag for f in frames] == [1, 2, 3, 4, 5, 6, 7]
    assert pr.DeviceInfo.unpack(frames[0].data).lanes == SMALL["lanes"]
    assert state == {"frame_errors": 1, "overruns": 0, "error": 1}


@pytest.mark.parametrize("fifo_depth", [8])
def test_overrun_is_flagged_and_answered(fifo_depth):
    """A host that pipelines more than the FIFO holds loses bytes: counted, flagged, and the damaged
    frame is answered with an error; the next request (sent after the answers) works."""
    burst = b"".join(pr.encode_frame(pr.OP_COUNTERS, t) for t in range(1, 5))
    script = [burst, ("quiet", 1200), pr.encode_frame(pr.OP_INFO, 9)]
    got, state = run_serial(script, fifo_depth=fifo_depth)
    assert state["overruns"] > 0 and state["error"] == 1
    frames = pr.split_frames(got)
    assert frames[-1].tag == 9 and frames[-1].status == pr.OK
    assert any(f.status != pr.OK for f in frames[:-1])
