"""Quick Amaranth-pysim tests of the accelerator top's frame units (``rtl.accelerator``).

The CRC-16 network against ``driver.protocol.crc16``; :class:`FrameReceiver` on a scripted byte stream
(garbage, good / damaged / oversize / empty / truncated frames) with random input gaps and a random
executor delay; :class:`FrameTransmitter` under random backpressure (every frame parsed by
``driver.protocol.parse_frame``); and a small :class:`Accelerator` end to end against
``driver.emulator.Emulator`` (INFO, COUNTERS, frame errors, WRITE_LIF + LIF). The full op coverage is
the Verilator testbench ``sim/tb_accelerator.py`` (``tests/test_accelerator_cocotb.py``).
"""

from __future__ import annotations

import random

import pytest
import torch
from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator

import driver.protocol as pr
from driver.emulator import Emulator
from golden_model import intops
from rtl.accelerator import (
    COUNTER_NAMES,
    JOB_FRAME,
    JOB_OVERSIZE,
    JOB_TRUNCATED,
    Accelerator,
    FrameReceiver,
    FrameTransmitter,
    _sat,
    crc16,
    crc16_byte,
)
from sim.accel_frames import (
    compare_responses,
    emulator_config,
    req_attention,
    req_lif,
    req_linear,
    req_write_lif,
    req_write_params,
    req_write_weights,
    weight_rows,
)
from sim.pysim_streams import Gaps, stream_put

SMALL = {"lanes": 4, "in_max": 24, "weight_rows": 40, "param_channels": 24, "membrane_rows": 20, "att_dim_max": 8,
         "att_max_tokens": 12, "max_payload": 96, "frame_timeout": 60}


def test_crc16_reference():
    assert crc16(b"123456789") == 0x29B1
    rng = random.Random(1)
    for n in (0, 1, 2, 7, 64, 300):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc16(data) == pr.crc16(data)
    assert COUNTER_NAMES == pr.COUNTER_NAMES


def test_crc16_byte_logic():
    crc, byte = Signal(16), Signal(8)
    out = Signal(16)
    m = Module()
    m.d.comb += out.eq(crc16_byte(crc, byte))
    sim = Simulator(m)
    rng = random.Random(2)

    async def tb(ctx):
        for c, b in [(0xFFFF, 0), (0, 0xFF), (0x8000, 0x01)] + [(rng.randrange(1 << 16), rng.randrange(256))
                                                                for _ in range(300)]:
            ctx.set(crc, c)
            ctx.set(byte, b)
            assert ctx.get(out) == crc16(bytes((b,)), c), (hex(c), hex(b))

    sim.add_testbench(tb)
    sim.run()


def test_saturation_logic():
    """``_sat`` (the requant's saturation, built on the top bits) equals a clamp at 8, 16 and 32 bits."""
    x = Signal(signed(49))
    outs = {bits: Signal(signed(bits)) for bits in (8, 16, 32)}
    m = Module()
    m.d.comb += [o.eq(_sat(x, bits)) for bits, o in outs.items()]
    sim = Simulator(m)
    rng = random.Random(3)
    values = [0, 1, -1, (1 << 48) - 1, -(1 << 48)]
    for bits in (8, 16, 32):
        hi = (1 << (bits - 1)) - 1
        values += [hi, hi + 1, hi - 1, -hi - 1, -hi - 2, -hi]
    values += [rng.randrange(-(1 << 48), 1 << 48) >> rng.randrange(48) for _ in range(400)]

    async def tb(ctx):
        for v in values:
            ctx.set(x, v)
            for bits, o in outs.items():
                hi = (1 << (bits - 1)) - 1
                assert ctx.get(o) == max(-hi - 1, min(hi, v)), (v, bits)

    sim.add_testbench(tb)
    sim.run()


# --------------------------------------------------------------------------------------------
# Receiver
# --------------------------------------------------------------------------------------------

def test_frame_receiver():
    mp, timeout = 32, 40
    dut = FrameReceiver(max_payload=mp, frame_timeout=timeout)
    rng = random.Random(3)
    good = pr.encode_frame(0x06, 7, bytes(range(20)))
    bad = bytearray(pr.encode_frame(0x02, 8, b"\x11\x22\x33"))
    bad[7] ^= 0x40
    vbad = pr.encode_frame(0x01, 9, b"", version=2)
    empty = pr.encode_frame(0x09, 10)
    oversize = bytes((0xA5, 1, 0x03, 11)) + (mp + 1).to_bytes(2, "little")
    full = pr.encode_frame(0x03, 12, bytes(rng.randrange(256) for _ in range(mp)))
    # (bytes, idle cycles after), expected jobs (kind, crc_ok, version, opcode, tag, payload)
    script = [
        (b"\x00\x13garbage", 0), (good, 0), (bytes(bad), 0), (b"\x5a", 0), (vbad, 0), (empty, 0),
        (oversize, 0), (b"\x00" * 3, 0), (full, 0), (good[:9], timeout + 10), (b"\xa5\x01", timeout + 10),
        (good, 0),
    ]
    expected = [
        (JOB_FRAME, 1, 1, 0x06, 7, bytes(range(20))), (JOB_FRAME, 0, 1, 0x02, 8, None),
        (JOB_FRAME, 1, 2, 0x01, 9, b""), (JOB_FRAME, 1, 1, 0x09, 10, b""), (JOB_OVERSIZE, None, 1, 0x03, 11, None),
        (JOB_FRAME, 1, 1, 0x03, 12, full[6:-2]), (JOB_TRUNCATED, None, 1, 0x06, 7, None),
        (JOB_TRUNCATED, None, 1, 0, 0, None), (JOB_FRAME, 1, 1, 0x06, 7, bytes(range(20))),
    ]
    n_bytes = sum(len(b) for b, _ in script)
    n_garbage = len(b"\x00\x13garbage") + 1 + 3
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    jobs: list[tuple] = []
    counts = {"bytes": 0, "garbage": 0}
    fb = bytearray(mp)

    async def producer(ctx):
        gaps = Gaps(0.3, 3, seed=4)
        for chunk, idle in script:
            for b in chunk:
                await stream_put(ctx, dut.rx, b, gaps)
            if idle:
                await ctx.tick().repeat(idle)

    async def executor(ctx):
        hold = 0                                        # the executor keeps a frame a few cycles
        while len(jobs) < len(expected):
            _, _, valid, kind, crc_ok, ver, op, tag, length, we, addr, d, b_in, garb = await ctx.tick().sample(
                dut.job_valid, dut.job_kind, dut.crc_ok, dut.version, dut.opcode, dut.tag, dut.length, dut.fb_we,
                dut.fb_addr, dut.fb_data, dut.byte_in, dut.garbage)
            counts["bytes"] += b_in
            counts["garbage"] += garb
            if we:
                fb[addr] = d
            ctx.set(dut.job_done, 0)
            if hold < 0:                                # job_done was seen at this edge
                hold = 0
            elif valid:
                if hold == 0:
                    jobs.append((kind, crc_ok if kind == JOB_FRAME else None, ver, op, tag, bytes(fb[:length])))
                    hold = rng.randint(1, 5)
                hold -= 1
                if hold == 0:
                    ctx.set(dut.job_done, 1)
                    hold = -1

    sim.add_testbench(producer)
    sim.add_testbench(executor, background=True)
    sim.run_until(3e-8 * (n_bytes * 3 + 4 * timeout + 400))
    assert len(jobs) == len(expected), jobs
    for got, want in zip(jobs, expected, strict=True):
        assert got[:5] == want[:5], (got, want)
        if want[5] is not None:
            assert got[5] == want[5]
    assert counts == {"bytes": n_bytes, "garbage": n_garbage}


# --------------------------------------------------------------------------------------------
# Transmitter
# --------------------------------------------------------------------------------------------

def test_frame_transmitter():
    depth = 64
    dut = FrameTransmitter(depth=depth)
    m = Module()
    m.submodules.dut = dut
    rng = random.Random(5)
    buf = [rng.randrange(256) for _ in range(depth)]
    sim = Simulator(m)
    sim.add_clock(1e-8)
    jobs = [(rng.randrange(256), rng.randrange(256), rng.choice((0, 0, 1, 7)), n) for n in (0, 1, 2, 17, 63, 5)]
    got = bytearray()

    async def memory(ctx):   # a synchronous read port: data = buf[address of the previous cycle]
        async for _, _, addr in ctx.tick().sample(dut.rd_addr):
            ctx.set(dut.rd_data, buf[addr % depth])

    async def driver(ctx):
        for op, tag, st, n in jobs:
            await ctx.tick().until(~dut.busy)
            ctx.set(dut.opcode, op)
            ctx.set(dut.tag, tag)
            ctx.set(dut.status, st)
            ctx.set(dut.length, n)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            if rng.random() < 0.5:
                await ctx.tick().repeat(rng.randint(1, 3))

    async def sink(ctx):
        gaps = Gaps(0.4, 4, seed=6)
        want = sum(9 + n for *_, n in jobs)
        while len(got) < want:
            idle = gaps()
            if idle:
                ctx.set(dut.tx.ready, 0)
                await ctx.tick().repeat(idle)
            ctx.set(dut.tx.ready, 1)
            (b,) = await ctx.tick().sample(dut.tx.payload).until(dut.tx.valid)
            got.append(b)
        ctx.set(dut.tx.ready, 0)

    sim.add_testbench(memory, background=True)
    sim.add_testbench(driver)
    sim.add_testbench(sink)
    sim.run()
    frames = pr.split_frames(bytes(got))
    assert [(f.opcode, f.tag, f.status, f.data) for f in frames] == [
        (op, tag, st, bytes(buf[:n])) for op, tag, st, n in jobs]


# --------------------------------------------------------------------------------------------
# The whole accelerator, small
# --------------------------------------------------------------------------------------------

def run_accelerator(params: dict, script: list, *, seed: int, gap: float = 0.2, backpressure: float = 0.3,
                    max_cycles: int = 40_000) -> tuple[bytes, Emulator]:
    """Feed ``script`` (bytes, or ``("idle", cycles)``) to the RTL and to the emulator; the RTL's output."""
    acc = Accelerator(**params)
    emu = Emulator(emulator_config(params))
    want = bytearray()
    for item in script:
        if isinstance(item, tuple):
            emu.idle(item[1])
        else:
            emu.feed(item)
        want += emu.read_output()
    sim = Simulator(acc)
    sim.add_clock(1e-8)
    got = bytearray()

    async def producer(ctx):
        gaps = Gaps(gap, 3, seed=seed)
        for item in script:
            if isinstance(item, tuple):
                await ctx.tick().repeat(item[1])
                continue
            for b in item:
                await stream_put(ctx, acc.rx, b, gaps)

    async def sink(ctx):
        gaps = Gaps(backpressure, 4, seed=seed + 1)
        while len(got) < len(want):
            idle = gaps()
            if idle:
                ctx.set(acc.tx.ready, 0)
                await ctx.tick().repeat(idle)
            ctx.set(acc.tx.ready, 1)
            (b,) = await ctx.tick().sample(acc.tx.payload).until(acc.tx.valid)
            got.append(b)
        ctx.set(acc.tx.ready, 0)
        await ctx.tick().repeat(30)
        assert not ctx.get(acc.tx.valid), "a response byte more than the emulator's"

    sim.add_testbench(producer)
    sim.add_testbench(sink)
    sim.run_until(1e-8 * max_cycles)
    assert len(got) == len(want), f"{len(got)} of {len(want)} response bytes within {max_cycles} cycles"
    return bytes(got), emu, bytes(want)


@pytest.mark.parametrize("seed", [0, 1])
def test_accelerator_small(seed):
    """INFO, COUNTERS, the frame errors, WRITE_LIF and two LIF time steps: responses == the emulator's."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    y0 = torch.randint(-300, 300, (3, 6), generator=gen, dtype=torch.int32)
    y1 = torch.randint(-300, 300, (3, 6), generator=gen, dtype=torch.int32)
    bad_crc = bytearray(pr.encode_frame(pr.OP_INFO, 3))
    bad_crc[-1] ^= 1
    script = [
        pr.encode_frame(pr.OP_INFO, 1), b"\x00\x01\x02", pr.encode_frame(pr.OP_COUNTERS, 2), bytes(bad_crc),
        pr.encode_frame(0x42, 4), pr.encode_frame(pr.OP_INFO, 5, version=3), pr.encode_frame(pr.OP_INFO, 6, b"x"),
        bytes((0xA5, 1, pr.OP_LIF, 7, 0xFF, 0x00)), pr.encode_frame(pr.OP_LIF, 8, req_lif(y0, neuron=1, first=1)),
        pr.encode_frame(pr.OP_WRITE_LIF, 9, req_write_lif(3, 2, 100)),
        pr.encode_frame(pr.OP_LIF, 10, req_lif(y0, neuron=1, first=1)),
        pr.encode_frame(pr.OP_LIF, 11, req_lif(y1, neuron=1, first=0)),
        pr.encode_frame(pr.OP_INFO, 12)[:5], ("idle", SMALL["frame_timeout"] + 5),
        pr.encode_frame(pr.OP_COUNTERS, 13), pr.encode_frame(pr.OP_CLEAR_COUNTERS, 14),
        pr.encode_frame(pr.OP_COUNTERS, 15),
    ]
    got, emu, want = run_accelerator(SMALL, script, seed=rng.randrange(1000))
    problems, frames = compare_responses(got, want)
    assert not problems, problems
    # LIF results straight from intops
    s0, v = intops.lif_step(torch.zeros_like(y0), y0, 3, 2, 100)
    s1, _ = intops.lif_step(v, y1, 3, 2, 100)
    lif = [f for f in frames if f.opcode == pr.OP_LIF and f.status == pr.OK]
    for f, s in zip(lif, (s0, s1), strict=True):
        bits, clean = pr.unpack_bits(f.data, 3, 6)
        assert clean and torch.equal(torch.from_numpy(bits).to(torch.int8), s)


def test_accelerator_without_attention_engine():
    """``att_dim_max = 0`` and no command queue (the iCE40 configuration): INFO says 0, ATTENTION is an
    unknown opcode, LINEAR with extreme requant parameters (the back end is narrower: no attention read-out)
    equals the emulator."""
    params = {**SMALL, "lanes": 2, "att_dim_max": 0, "att_max_tokens": 0, "linear_queue": 0}
    gen = torch.Generator().manual_seed(5)
    c_in, c_out, tokens = 12, 5, 3
    w = torch.randint(-128, 128, (c_out, c_in), generator=gen, dtype=torch.int8)
    w[0] = -128                                              # the accumulator's extreme
    x = torch.randint(0, 2, (tokens, c_in), generator=gen, dtype=torch.int8)
    x[0] = 1
    m = torch.tensor([32767, -32768, 1, 12345, -7], dtype=torch.int32)
    s = torch.tensor([1, 47, 1, 13, 2], dtype=torch.int32)
    b = torch.tensor([0, 5, -(1 << 31), (1 << 31) - 1, 100], dtype=torch.int32)
    script = [
        pr.encode_frame(pr.OP_INFO, 1),
        pr.encode_frame(pr.OP_ATTENTION, 2, req_attention([], mode=0, dim=4, tokens=0, p_base=0, out_bits=8)),
        pr.encode_frame(pr.OP_WRITE_WEIGHTS, 3, req_write_weights(0, weight_rows(w, 2))),
        pr.encode_frame(pr.OP_WRITE_PARAMS, 4, req_write_params(0, m, s, b)),
    ]
    script += [pr.encode_frame(pr.OP_LINEAR, 5 + i, req_linear(x, c_out=c_out, w_base=0, p_base=0, out_bits=bits))
               for i, bits in enumerate((8, 16, 32))]
    script.append(pr.encode_frame(pr.OP_COUNTERS, 9))
    got, emu, want = run_accelerator(params, script, seed=5)
    problems, frames = compare_responses(got, want)
    assert not problems, problems
    assert pr.DeviceInfo.unpack(frames[0].data).att_dim_max == 0
    assert frames[1].status == pr.ERR_OPCODE
    assert [f.status for f in frames[2:8]] == [pr.OK] * 6
