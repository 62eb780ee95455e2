"""cocotb testbench of ``rtl.accelerator.Accelerator``: the host protocol v1 (``docs/protocol.md``) end to end.

* **Drivers**: :class:`~sim.streams.StreamSource` on ``rx`` (host -> device bytes, random idle cycles),
  :class:`~sim.streams.StreamSink` on ``tx`` (random backpressure, stream-rule checks).
* **Reference**: every byte sent to the RTL is also fed to :class:`driver.emulator.Emulator` configured
  with the same sizes (:func:`sim.accel_frames.emulator_config`); a frame the test leaves incomplete is
  closed in the emulator once the RTL's ``frame_timeout`` has passed.
* **Scoreboard** (:func:`sim.accel_frames.compare_responses`): the RTL's response stream must parse
  (sync, version, length, CRC) and equal the emulator's frame for frame, byte for byte, except the
  COUNTERS words the emulator has no model of (starved / blocked cycles), which are checked for
  consistency with the elapsed cycles instead.
* **Results** are also decoded and compared with ``golden_model.intops`` directly: LINEAR with
  ``linear_int8`` + ``requant``, LIF with ``lif_step`` chains, ATTENTION with ``attention_readout``
  (+ ``requant``; raw read-outs through ``driver.attention.decode_readout`` == ``intops.attention``).

The configuration (``Accelerator`` keyword arguments) comes from the pytest wrapper
(:func:`sim.verilator.tb_params`); ``SPIKEVID_TB_SEED`` (an integer) changes every test's seed.
"""

from __future__ import annotations

import os
import random

import cocotb
import numpy as np
import torch
from amaranth.hdl import unsigned
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

import driver.protocol as pr
from driver.attention import decode_readout, encode_window
from driver.emulator import Emulator
from golden_model import intops
from rtl.accelerator import AcceleratorConfig
from sim.accel_frames import (
    UNMODELLED_COUNTERS,
    compare_responses,
    emulator_config,
    req_attention,
    req_lif,
    req_linear,
    req_write_lif,
    req_write_params,
    req_write_weights,
    values,
    weight_rows,
)
from sim.streams import ClockLoop, StreamSink, StreamSource, random_pauses
from sim.verilator import tb_params

PARAMS = tb_params()
CFG = AcceleratorConfig(**PARAMS)
P, MP = CFG.lanes, CFG.max_payload
TEST_TIMEOUT_MS = 200   # simulated time limit of each cocotb test (10 ns clock: 20 M cycles)
SEED_OFFSET = int(os.environ.get("SPIKEVID_TB_SEED", "0"))   # other seeded data and pauses, same tests
MODES = {"dot": 0, "hamming": 1}


def spikes(gen: torch.Generator, n: int, c: int, density: float) -> torch.Tensor:
    return (torch.rand(n, c, generator=gen) < density).to(torch.int8)


def random_params(gen: torch.Generator, n: int, *, visible: bool = True):
    """Requant ``M, S, B`` (int32): the full legal range, half of them giving unsaturated values."""
    m = torch.randint(-(1 << 15), 1 << 15, (n,), generator=gen, dtype=torch.int32)
    s = torch.randint(1, 48, (n,), generator=gen, dtype=torch.int32)
    b = torch.randint(-(1 << 31), (1 << 31) - 1, (n,), generator=gen, dtype=torch.int64).to(torch.int32)
    if visible:
        h = n // 2 + 1
        s[:h] = torch.randint(1, 12, (h,), generator=gen, dtype=torch.int32)
        b[:h] = torch.randint(-200, 200, (h,), generator=gen, dtype=torch.int32)
    perm = torch.randperm(n, generator=gen)
    return m[perm], s[perm], b[perm]


class Env:
    def __init__(self, dut, seed: int, *, idle: float = 0.2, backpressure: float = 0.3):
        seed += 1000 * SEED_OFFSET
        self.dut = dut
        self.seed = seed
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self._levels = (idle, backpressure)
        self._tag = 0
        self.frames: list[pr.Frame] = []        # every RTL response frame checked so far
        # host-side copy of the device state, for the direct golden-model checks
        self.weights = torch.zeros(CFG.weight_rows, P, dtype=torch.int8)
        self.pm = torch.zeros(CFG.param_channels, dtype=torch.int32)
        self.ps = torch.ones(CFG.param_channels, dtype=torch.int32)
        self.pb = torch.zeros(CFG.param_channels, dtype=torch.int32)

    async def start(self) -> Env:
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.rx__valid.value = 0
        dut.tx__ready.value = 0
        self.loop = ClockLoop(dut.clk)
        self.src = StreamSource(dut, "rx", unsigned(8), self.loop)
        self.sink = StreamSink(dut, "tx", unsigned(8), self.loop, keep=False)
        self.sink.add_callback(self._on_byte)
        await self.reset()
        self.random_pauses()
        return self

    async def reset(self) -> None:
        """Hardware reset (3 cycles); the reference restarts as a fresh emulator (power-on state)."""
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        self.emu = Emulator(emulator_config(PARAMS))
        self.got, self.want = bytearray(), bytearray()   # the response streams start afresh
        self._seen = 0                                    # RTL frames checked since the reset
        self.clear_cycle = self.loop.cycle

    def random_pauses(self, idle: float | None = None, backpressure: float | None = None) -> None:
        idle = self.rng.choice((0.0, 0.1, 0.3, 0.6)) if idle is None else idle
        bp = self.rng.choice((0.0, 0.2, 0.5, 0.8)) if backpressure is None else backpressure
        s = self.rng.randrange(1 << 30)
        self.src.set_pauses(random_pauses(s, idle, burst=self.rng.randint(1, 6)))
        self.sink.set_pauses(random_pauses(s + 1, bp, burst=self.rng.randint(1, 12)))

    def _on_byte(self, b: int) -> None:
        self.got.append(b)

    # ---- sending ----------------------------------------------------------------------------------------
    def raw(self, data: bytes) -> None:
        """Bytes to the RTL and to the emulator."""
        for b in data:
            self.src.send_nowait(b)
        self.emu.feed(bytes(data))
        self.want += self.emu.read_output()

    def req(self, opcode: int, payload: bytes = b"", *, version: int = pr.VERSION) -> int:
        self._tag = self._tag % 255 + 1
        self.raw(pr.encode_frame(opcode, self._tag, payload, version=version))
        return self._tag

    async def truncate(self) -> None:
        """Let the partial frame just sent time out in the RTL; the emulator closes it too."""
        await self.src.idle()
        await ClockCycles(self.dut.clk, CFG.frame_timeout + 20)
        self.emu.idle(CFG.frame_timeout)
        self.want += self.emu.read_output()

    # ---- checking ---------------------------------------------------------------------------------------
    async def sync(self, what: str, max_cycles: int = 400_000) -> list[pr.Frame]:
        """Wait for every expected response byte; compare them with the emulator's. Returns the new frames."""
        await self.src.idle()
        start = self.loop.cycle
        while len(self.got) < len(self.want):
            assert self.loop.cycle - start < max_cycles, (
                f"{what}: {len(self.got)} of {len(self.want)} response bytes after {max_cycles} cycles")
            await ClockCycles(self.dut.clk, 20)
        await ClockCycles(self.dut.clk, 30)
        problems, frames = compare_responses(bytes(self.got), bytes(self.want))
        assert not problems, f"{what}: " + "\n".join(problems[:6])
        new = frames[self._seen:]
        self._seen = len(frames)
        self.frames += new
        for f in new:
            c = _counters(f)
            if c is not None:
                self._check_unmodelled(c, what)
        return new

    def _check_unmodelled(self, c: dict[str, int], what: str) -> None:
        elapsed = self.loop.cycle - self.clear_cycle
        for eng in ("linear", "attention"):
            total = c[f"{eng}_busy"] + c[f"{eng}_starved"] + c[f"{eng}_blocked"]
            assert total <= elapsed, f"{what}: {eng} busy + starved + blocked = {total} > {elapsed} cycles"

    def by_tag(self, frames: list[pr.Frame], tag: int) -> pr.Frame:
        (f,) = [f for f in frames if f.tag == tag]
        return f

    async def expect(self, what: str, tag: int, status: int, frames: list[pr.Frame] | None = None) -> pr.Frame:
        frames = await self.sync(what) if frames is None else frames
        f = self.by_tag(frames, tag)
        assert f.status == status, f"{what}: status {f.status}, expected {status}"
        return f

    # ---- device state helpers ------------------------------------------------------------------------
    def write_weights(self, row: int, rows: torch.Tensor) -> list[int]:
        per = (MP - pr.WEIGHTS_HEADER.size) // P
        tags = []
        for lo in range(0, rows.shape[0], per):
            chunk = rows[lo:lo + per]
            tags.append(self.req(pr.OP_WRITE_WEIGHTS, req_write_weights(row + lo, chunk)))
            self.weights[row + lo:row + lo + chunk.shape[0]] = chunk
        return tags

    def write_params(self, channel: int, m, s, b) -> list[int]:
        per = (MP - pr.PARAMS_HEADER.size) // pr.PARAM_DTYPE.itemsize
        tags = []
        for lo in range(0, len(m), per):
            sl = slice(lo, lo + per)
            tags.append(self.req(pr.OP_WRITE_PARAMS, req_write_params(channel + lo, m[sl], s[sl], b[sl])))
            n = len(m[sl])
            self.pm[channel + lo:channel + lo + n] = m[sl]
            self.ps[channel + lo:channel + lo + n] = s[sl]
            self.pb[channel + lo:channel + lo + n] = b[sl]
        return tags

    def linear(self, x: torch.Tensor, *, c_out: int, w_base: int, p_base: int, out_bits: int) -> list[tuple]:
        """LINEAR frames for ``x``, split to fit ``max_payload`` both ways; ``(tag, lo, n)`` per frame."""
        tokens, c_in = x.shape
        per = min((MP - pr.LINEAR_HEADER.size) // pr.nbytes_bits(c_in), (MP - 1) // (c_out * out_bits // 8))
        assert per >= 1
        out = []
        for lo in range(0, max(tokens, 1), per):
            xs = x[lo:lo + per]
            tag = self.req(pr.OP_LINEAR, req_linear(xs, c_out=c_out, w_base=w_base, p_base=p_base, out_bits=out_bits))
            out.append((tag, lo, xs.shape[0]))
        return out

    def linear_golden(self, x: torch.Tensor, *, c_out: int, w_base: int, p_base: int, out_bits: int) -> torch.Tensor:
        c_in = x.shape[1]
        g = -(-c_out // P)
        w = self.weights[w_base:w_base + c_in * g].reshape(c_in, g * P)[:, :c_out].t().contiguous()
        acc = intops.linear_int8(x, w)
        sl = slice(p_base, p_base + c_out)
        return intops.requant(acc, self.pm[sl], self.ps[sl], self.pb[sl], out_bits)


def _counters(f: pr.Frame) -> dict[str, int] | None:
    if f.opcode != pr.OP_COUNTERS or f.status != pr.OK or len(f.data) != pr.COUNTERS_FORMAT.size:
        return None
    return dict(zip(pr.COUNTER_NAMES, pr.COUNTERS_FORMAT.unpack(f.data), strict=True))


async def new_env(dut, seed: int, **kw) -> Env:
    return await Env(dut, seed, **kw).start()


# --------------------------------------------------------------------------------------------
# (a) frames: INFO, RESET, COUNTERS, CLEAR_COUNTERS and every frame-level error
# --------------------------------------------------------------------------------------------

@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_frames(dut):
    """INFO / COUNTERS / CLEAR_COUNTERS / RESET, garbage, bad CRC, version, opcode, lengths, truncation."""
    env = await new_env(dut, 1)
    t = env.req(pr.OP_INFO)
    f = await env.expect("INFO", t, pr.OK)
    assert pr.DeviceInfo.unpack(f.data) == pr.DeviceInfo(**CFG.info())
    t = env.req(pr.OP_COUNTERS)
    f = await env.expect("COUNTERS after reset", t, pr.OK)
    c = _counters(f)
    assert (c["frames"], c["bytes_in"], c["bytes_out"]) == (2, 16, 9 + 23), c
    # garbage, then every frame error, each followed by a valid request
    for i in range(3):
        env.random_pauses()
        env.raw(bytes(env.rng.choice((0x00, 0x5A, 0xFF, 0x13)) for _ in range(env.rng.randint(1, 20))))
        env.req(pr.OP_INFO)
        bad = bytearray(pr.encode_frame(pr.OP_COUNTERS, 0x77, b"" if i else b"abc"))
        pos = env.rng.choice([1, 2, 3] + list(range(6, len(bad))))               # not the sync or length bytes
        bad[pos] ^= 1 << env.rng.randrange(8)
        env.raw(bytes(bad))
        env.req(pr.OP_COUNTERS)
        env.req(pr.OP_INFO, version=env.rng.choice((0, 2, 255)))
        env.req(env.rng.choice((0x00, 0x0B, 0x42, 0xFF)), bytes(env.rng.randrange(256) for _ in range(i * 5)))
        env.req(pr.OP_INFO, b"\x00")                                               # L wrong for the op
        env.req(pr.OP_COUNTERS, b"\x00" * 3)
        env.req(pr.OP_CLEAR_COUNTERS, b"\x01")
        env.req(pr.OP_RESET, b"\x01\x02")
        env.raw(bytes((pr.SYNC_HOST, 1, pr.OP_LINEAR, 0x55)) + (MP + 1 + i).to_bytes(2, "little"))   # oversize
        env.raw(bytes(MP // 4 + i))                                               # its "payload": garbage zeros
        env.raw(bytes((pr.SYNC_HOST, 1, pr.OP_INFO, 0x56, 0xFF, 0xFF)))           # the largest length
        env.req(pr.OP_COUNTERS)
        frames = await env.sync(f"frame errors, round {i}")
        statuses = [f.status for f in frames]
        assert pr.ERR_CRC in statuses and pr.ERR_VERSION in statuses and pr.ERR_OPCODE in statuses
        assert statuses.count(pr.ERR_LENGTH) >= 6, statuses
    # truncated frames: header incomplete, payload incomplete, CRC incomplete; the device answers all
    for cut in (1, 3, 5, 6, 8, 9):
        frame = pr.encode_frame(pr.OP_WRITE_LIF, 0x60 + cut, req_write_lif(3, 2, 100))
        env.raw(frame[:cut])
        await env.truncate()
        t = env.req(pr.OP_INFO)
        frames = await env.sync(f"truncated after {cut} bytes")
        assert frames[0].status == pr.ERR_TRUNCATED and env.by_tag(frames, t).status == pr.OK
        assert (frames[0].opcode, frames[0].tag) == ((pr.OP_WRITE_LIF, 0x60 + cut) if cut > 3 else
                                                     (pr.OP_WRITE_LIF if cut > 2 else 0, 0))
    # a host that lost sync: max_payload + 8 zero bytes complete the partial frame, then INFO
    env.raw(pr.encode_frame(pr.OP_LINEAR, 0x70, bytes(40))[:20])
    env.raw(bytes(MP + 8))
    t = env.req(pr.OP_INFO)
    await env.expect("resync", t, pr.OK)
    # pipelined requests, CLEAR_COUNTERS and RESET zero the counters after counting their own request
    env.random_pauses(0.0, 0.0)
    tags = [env.req(op) for op in (pr.OP_INFO, pr.OP_COUNTERS, pr.OP_CLEAR_COUNTERS, pr.OP_COUNTERS, pr.OP_INFO,
                                   pr.OP_RESET, pr.OP_COUNTERS)]
    frames = await env.sync("pipelined")
    c1, c2 = _counters(env.by_tag(frames, tags[3])), _counters(env.by_tag(frames, tags[6]))
    assert (c1["frames"], c1["bytes_in"], c1["bytes_out"]) == (1, 8, 9), c1
    assert (c2["frames"], c2["bytes_in"], c2["bytes_out"]) == (1, 8, 9), c2
    env.random_pauses(0.3, 0.7)
    for _ in range(8):
        env.req(env.rng.choice((pr.OP_INFO, pr.OP_COUNTERS, pr.OP_CLEAR_COUNTERS)))
    await env.sync("random small requests")


# --------------------------------------------------------------------------------------------
# (b) WRITE_WEIGHTS / WRITE_PARAMS / WRITE_LIF and (c) LINEAR
# --------------------------------------------------------------------------------------------

@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_writes(dut):
    """Write ops: good frames, ERR_LENGTH and ERR_RANGE cases; a rejected write changes nothing."""
    env = await new_env(dut, 2)
    R, PC = CFG.weight_rows, CFG.param_channels
    rows = torch.randint(-128, 128, (5, P), generator=env.gen, dtype=torch.int8)
    m, s, b = random_params(env.gen, 6)
    cases = [
        (pr.OP_WRITE_WEIGHTS, req_write_weights(R - 5, rows), pr.OK),
        (pr.OP_WRITE_WEIGHTS, req_write_weights(R - 4, rows), pr.ERR_RANGE),
        (pr.OP_WRITE_WEIGHTS, req_write_weights(0xFFFF_FFFF, rows[:1]), pr.ERR_RANGE),
        (pr.OP_WRITE_WEIGHTS, req_write_weights(0, rows)[:-1], pr.ERR_LENGTH),
        (pr.OP_WRITE_WEIGHTS, req_write_weights(0, rows[:0]), pr.ERR_LENGTH),
        (pr.OP_WRITE_WEIGHTS, b"\x00\x00", pr.ERR_LENGTH),
        (pr.OP_WRITE_PARAMS, req_write_params(PC - 6, m, s, b), pr.OK),
        (pr.OP_WRITE_PARAMS, req_write_params(PC - 5, m, s, b), pr.ERR_RANGE),
        (pr.OP_WRITE_PARAMS, req_write_params(0, m, s, b)[:-2], pr.ERR_LENGTH),
        (pr.OP_WRITE_PARAMS, req_write_params(0, m[:0], s[:0], b[:0]), pr.ERR_LENGTH),
        (pr.OP_WRITE_PARAMS, b"\x00", pr.ERR_LENGTH),
        (pr.OP_WRITE_PARAMS, req_write_params(0, m[:2], torch.tensor([5, 0]), b[:2]), pr.ERR_RANGE),
        (pr.OP_WRITE_PARAMS, req_write_params(0, m[:2], torch.tensor([48, 1]), b[:2]), pr.ERR_RANGE),
        (pr.OP_WRITE_PARAMS, req_write_params(0, m[:1], torch.tensor([47]), b[:1]), pr.OK),
        (pr.OP_WRITE_LIF, req_write_lif(1 << 15, 15, 32767), pr.OK),
        (pr.OP_WRITE_LIF, req_write_lif(3, 2, 100), pr.OK),
        (pr.OP_WRITE_LIF, req_write_lif(5, 2, 100), pr.ERR_RANGE),
        (pr.OP_WRITE_LIF, req_write_lif(0, 2, 100), pr.ERR_RANGE),
        (pr.OP_WRITE_LIF, req_write_lif(1, 0, 100), pr.ERR_RANGE),
        (pr.OP_WRITE_LIF, req_write_lif(1, 16, 100), pr.ERR_RANGE),
        (pr.OP_WRITE_LIF, req_write_lif(1, 1, 0), pr.ERR_RANGE),
        (pr.OP_WRITE_LIF, req_write_lif(1, 1, -5), pr.ERR_RANGE),
        (pr.OP_WRITE_LIF, req_write_lif(1, 1, 5) + b"\x00", pr.ERR_LENGTH),
        (pr.OP_WRITE_LIF, b"", pr.ERR_LENGTH),
    ]
    tags = []
    for op, payload, want in cases:
        if env.rng.random() < 0.3:
            env.random_pauses()
        tags.append((env.req(op, payload), want))
    frames = await env.sync("write ops")
    for tag, want in tags:
        assert env.by_tag(frames, tag).status == want, (tag, want)
    t = env.req(pr.OP_COUNTERS)
    await env.expect("counters", t, pr.OK)


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_linear(dut):
    """LINEAR on seeded random layers and spikes: every out_bits, unaligned bases, the raw accumulator."""
    env = await new_env(dut, 3)
    C, R, PC = CFG.in_max, CFG.weight_rows, CFG.param_channels
    layers = [(C, min(4 * P, R // C * P) or P), (1, 1), (7, P - 1 or 1), (9, 2 * P + 3), (C - 1, P + 1), (8, 3)]
    for li, (c_in, c_out) in enumerate(layers):
        c_in = max(1, min(c_in, C))
        g = -(-c_out // P)
        if c_in * g > R:
            continue
        env.random_pauses()
        w = torch.randint(-128, 128, (c_out, c_in), generator=env.gen, dtype=torch.int8)
        w[torch.rand(c_out, c_in, generator=env.gen) < 0.2] = -128
        w_base = env.rng.randint(0, R - c_in * g)
        p_base = env.rng.randint(0, PC - c_out)
        env.write_weights(w_base, weight_rows(w, P))
        m, s, b = random_params(env.gen, c_out)
        env.write_params(p_base, m, s, b)
        for out_bits in (8, 16, 32):
            x = spikes(env.gen, env.rng.randint(1, 9), c_in, env.rng.choice((0.0, 0.05, 0.3, 1.0)))
            x[0] = 1 - x[0]
            sent = env.linear(x, c_out=c_out, w_base=w_base, p_base=p_base, out_bits=out_bits)
            frames = await env.sync(f"layer {li} ({c_in} x {c_out}) out_bits {out_bits}")
            want = env.linear_golden(x, c_out=c_out, w_base=w_base, p_base=p_base, out_bits=out_bits)
            for tag, lo, n in sent:
                f = env.by_tag(frames, tag)
                assert f.status == pr.OK, f"layer {li}: status {f.status}"
                got = values(f.data, out_bits).reshape(n, c_out)
                assert np.array_equal(got, want[lo:lo + n].numpy()), f"layer {li} out_bits {out_bits}"
        # the raw accumulator: M = 2, S = 1, B = 0, out_bits = 32
        env.write_params(p_base, torch.full((c_out,), 2), torch.ones(c_out, dtype=torch.int32),
                         torch.zeros(c_out, dtype=torch.int32))
        x = spikes(env.gen, 5, c_in, 0.5)
        sent = env.linear(x, c_out=c_out, w_base=w_base, p_base=p_base, out_bits=32)
        frames = await env.sync(f"layer {li} raw")
        acc = np.concatenate([values(env.by_tag(frames, t).data, 32).reshape(n, c_out) for t, _, n in sent])
        assert np.array_equal(acc, intops.linear_int8(x, w).numpy()), f"layer {li}: raw accumulators"
    t = env.req(pr.OP_COUNTERS)
    await env.expect("counters", t, pr.OK)


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_linear_errors(dut):
    """LINEAR: ERR_UNLOADED, ERR_RANGE, ERR_LENGTH in the protocol's order; exact results right after."""
    env = await new_env(dut, 4)
    C, R, PC = CFG.in_max, CFG.weight_rows, CFG.param_channels
    c_in, c_out = min(C, 12), P + 2
    g = -(-c_out // P)
    w = torch.randint(-128, 128, (c_out, c_in), generator=env.gen, dtype=torch.int8)
    x = spikes(env.gen, 4, c_in, 0.4)
    hdr = {"c_out": c_out, "w_base": 3, "p_base": 5}

    def lin(xx, **kw) -> bytes:
        return req_linear(xx, **{**hdr, "out_bits": 16, **kw})

    m, s, b = random_params(env.gen, c_out)
    tags = [(env.req(pr.OP_LINEAR, lin(x)), pr.ERR_UNLOADED)]           # nothing written
    env.write_weights(3, weight_rows(w, P)[:-1])                         # all rows but the last,
    env.write_params(5, m[:-1], s[:-1], b[:-1])                          # all channels but the last
    tags.append((env.req(pr.OP_LINEAR, lin(x)), pr.ERR_UNLOADED))
    env.write_weights(3 + c_in * g - 1, weight_rows(w, P)[-1:])
    tags.append((env.req(pr.OP_LINEAR, lin(x)), pr.ERR_UNLOADED))      # the last channel missing
    env.write_params(5 + c_out - 1, m[-1:], s[-1:], b[-1:])
    t_ok = env.req(pr.OP_LINEAR, lin(x))
    cases = [
        (lin(x, p_base=6), pr.ERR_UNLOADED),                             # one channel beyond the written ones
        (lin(x, c_out=c_out + P), pr.ERR_UNLOADED),                      # more rows than written
        (lin(x)[:-1], pr.ERR_LENGTH),
        (lin(x) + b"\x00", pr.ERR_LENGTH),
        (lin(x)[:12], pr.ERR_LENGTH),
        (lin(x, out_bits=12), pr.ERR_RANGE),
        (lin(x, w_base=R - 1), pr.ERR_RANGE),
        (lin(x, w_base=0xFFFF_FFFF), pr.ERR_RANGE),                      # fields far beyond every limit
        (lin(x, w_base=1 << 20), pr.ERR_RANGE),
        (lin(x, p_base=0xFFFF), pr.ERR_RANGE),
        (lin(x, c_out=0xFFFF), pr.ERR_RANGE),
        (lin(x, p_base=PC - c_out + 1), pr.ERR_RANGE),
        (lin(x, c_out=0), pr.ERR_RANGE),
        (pr.LINEAR_HEADER.pack(C + 1, c_out, 0, 0, 8, 1) + bytes(pr.nbytes_bits(C + 1)), pr.ERR_RANGE),
        (pr.LINEAR_HEADER.pack(0, c_out, 0, 0, 8, 0), pr.ERR_RANGE),
        (lin(x[:0]), pr.OK),                                             # tokens = 0: an empty response
    ]
    if c_in % 8:                                                         # a padding bit set: the first,
        for tok in sorted({0, 1, len(x) - 1}):                           # the second, the last token
            bad = bytearray(lin(x))
            bad[pr.LINEAR_HEADER.size + (tok + 1) * pr.nbytes_bits(c_in) - 1] |= 0x80
            cases.append((bytes(bad), pr.ERR_RANGE))
    big = MP // (c_out * 4) + 1                                          # a response beyond max_payload
    if pr.LINEAR_HEADER.size + big * pr.nbytes_bits(c_in) <= MP:
        cases.append((lin(spikes(env.gen, big, c_in, 0.2), out_bits=32), pr.ERR_RANGE))
    for payload, want in cases:
        tags.append((env.req(pr.OP_LINEAR, payload), want))
    frames = await env.sync("linear errors")
    for tag, want in tags:
        assert env.by_tag(frames, tag).status == want, (tag, want, env.by_tag(frames, tag).status)
    ok = env.by_tag(frames, t_ok)
    assert ok.status == pr.OK
    got = values(ok.data, 16).reshape(4, c_out)
    assert np.array_equal(got, env.linear_golden(x, out_bits=16, **hdr).numpy())
    # RESET clears the written marks: the same request is ERR_UNLOADED again, then fine after a reload
    t1 = env.req(pr.OP_RESET)
    t2 = env.req(pr.OP_LINEAR, lin(x))
    frames = await env.sync("after RESET")
    assert env.by_tag(frames, t1).status == pr.OK and env.by_tag(frames, t2).status == pr.ERR_UNLOADED
    env.write_weights(3, weight_rows(w, P))
    env.write_params(5, m, s, b)
    sent = env.linear(x, out_bits=8, **hdr)
    frames = await env.sync("reloaded")
    got = values(env.by_tag(frames, sent[0][0]).data, 8).reshape(4, c_out)
    assert np.array_equal(got, env.linear_golden(x, out_bits=8, **hdr).numpy())


# --------------------------------------------------------------------------------------------
# (d) LIF
# --------------------------------------------------------------------------------------------

@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_lif(dut):
    """LIF time steps on several layers (membranes kept between frames) == intops.lif_step chains."""
    env = await new_env(dut, 5)
    MR = CFG.membrane_rows
    t = env.req(pr.OP_LIF, req_lif(torch.zeros(1, 3, dtype=torch.int32), neuron=0, first=1))
    await env.expect("LIF before WRITE_LIF", t, pr.ERR_UNLOADED)
    for leak, shift, theta in ((3, 2, 100), (1 << 15, 15, 1), (1, 4, 32767), (7, 3, 250)):
        env.random_pauses()
        env.req(pr.OP_WRITE_LIF, req_write_lif(leak, shift, theta))
        for channels in (1, 6, P, 2 * P + 5, 8 * P + 1):
            gc = -(-channels // P)
            per = min((MP - pr.LIF_HEADER.size) // (2 * channels), (MP - 1) // pr.nbytes_bits(channels))
            tokens = min(env.rng.randint(1, 12), MR // gc)
            neuron = env.rng.randint(0, MR // gc - tokens)
            v = torch.zeros(tokens, channels, dtype=torch.int32)
            for step in range(3):
                y = torch.randint(-(1 << 15), 1 << 15, (tokens, channels), generator=env.gen, dtype=torch.int32)
                if step == 1:
                    y = y // 64
                want, v = intops.lif_step(v, y, leak, shift, theta)
                order = list(range(0, tokens, per))
                env.rng.shuffle(order)                                  # any token order, any split
                sent = [(env.req(pr.OP_LIF, req_lif(y[lo:lo + per], neuron=neuron + lo, first=int(step == 0))),
                         lo, min(per, tokens - lo)) for lo in order]
                frames = await env.sync(f"LIF {channels} channels step {step}")
                for tag, lo, n in sent:
                    f = env.by_tag(frames, tag)
                    assert f.status == pr.OK
                    bits, clean = pr.unpack_bits(f.data, n, channels)
                    assert clean and np.array_equal(bits, want[lo:lo + n].numpy()), f"LIF {channels} step {step}"
    # errors
    y = torch.zeros(2, 5, dtype=torch.int32)
    cases = [
        (req_lif(y, neuron=0, first=2), pr.ERR_RANGE),
        (req_lif(y, neuron=MR, first=1), pr.ERR_RANGE),
        (req_lif(y, neuron=0xFFFF_FFFF, first=1), pr.ERR_RANGE),
        (req_lif(y, neuron=1 << 16, first=1), pr.ERR_RANGE),
        (req_lif(y, neuron=MR - 1, first=1), pr.ERR_RANGE),
        (pr.LIF_HEADER.pack(0, 0, 0, 1), pr.ERR_RANGE),
        (req_lif(y, neuron=0, first=1)[:-1], pr.ERR_LENGTH),
        (req_lif(y, neuron=0, first=1)[:8], pr.ERR_LENGTH),
        (req_lif(y[:0], neuron=0, first=0), pr.OK),
    ]
    tags = [(env.req(pr.OP_LIF, p), want) for p, want in cases]
    frames = await env.sync("LIF errors")
    for tag, want in tags:
        assert env.by_tag(frames, tag).status == want
    t = env.req(pr.OP_COUNTERS)
    await env.expect("counters", t, pr.OK)


# --------------------------------------------------------------------------------------------
# (e) ATTENTION
# --------------------------------------------------------------------------------------------

def attention_records(frame: pr.Frame, dim: int, out_bits: int) -> list[dict]:
    size = pr.RECORD_HEADER.size + dim * out_bits // 8
    assert len(frame.data) % size == 0
    out = []
    for r in range(len(frame.data) // size):
        chunk = frame.data[r * size:(r + 1) * size]
        skip, const = pr.RECORD_HEADER.unpack_from(chunk)
        out.append({"skip": skip, "const": const, "data": values(chunk[pr.RECORD_HEADER.size:], out_bits)})
    return out


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_attention(dut):
    """ATTENTION windows (dot / Hamming, plain / compact): records == requant(intops.attention_readout)."""
    env = await new_env(dut, 6)
    DM, NT, PC = CFG.att_dim_max, CFG.att_max_tokens, CFG.param_channels
    p_base = env.rng.randint(0, PC - DM)
    m, s, b = random_params(env.gen, DM)
    env.write_params(p_base, m, s, b)
    t = env.req(pr.OP_COUNTERS)
    await env.expect("params", t, pr.OK)
    windows = 0
    for dim in sorted({1, 7, 8, P, DM - 1, DM} - {0}):
        for mode in ("dot", "hamming"):
            env.random_pauses()
            out_bits = env.rng.choice((8, 16, 32))
            d = pr.nbytes_bits(dim)
            n_fit = min((MP - 1) // (3 + dim * out_bits // 8) - 1, (MP - 10 - d) // (4 + 3 * d))
            n = env.rng.randint(1, max(1, min(NT, 24, n_fit)))
            dens = env.rng.choice((0.0, 0.1, 0.4, 1.0))
            k, v, q = (spikes(env.gen, n, dim, dens) for _ in range(3))
            if n > 2:
                k[1] = 0
                q[0] = 0
            compact = env.rng.random() < 0.6
            cmds = encode_window(k, v, q, mode, compact=compact)
            if compact and mode == "dot" and any(int(r.sum()) == 0 for r in q):
                cmds.insert(1 + sum(1 for c in cmds if c["op"] == 1), {"op": 2, "mode": 1})   # requant(0)
            tokens = cmds[0]["tokens"]
            payload = req_attention(cmds, mode=MODES[mode], dim=dim, tokens=tokens, p_base=p_base, out_bits=out_bits)
            rec_size = 3 + dim * out_bits // 8
            n_q = sum(1 for c in cmds if c["op"] == 2)
            if len(payload) > MP or 1 + n_q * rec_size > MP:
                continue
            t = env.req(pr.OP_ATTENTION, payload)
            f = await env.expect(f"attention {mode} dim {dim} n {n}", t, pr.OK)
            windows += 1
            kv, s_v = intops.attention_kv(k, v)
            recs = attention_records(f, dim, out_bits)
            q_cmds = [c for c in cmds if c["op"] == 2]
            assert len(recs) == len(q_cmds)
            sl = slice(p_base, p_base + dim)
            for rec, c in zip(recs, q_cmds, strict=True):
                qv = torch.tensor([[(c.get("a", 0) >> i) & 1 for i in range(dim)]], dtype=torch.int8)
                if c.get("mode"):
                    qv.zero_()
                o = intops.attention_readout(qv, kv, s_v, mode)[0]
                y = intops.requant(o, env.pm[sl], env.ps[sl], env.pb[sl], out_bits)
                assert (rec["skip"], rec["const"]) == (0 if c.get("mode") else c.get("skip", 0), c.get("mode", 0))
                assert np.array_equal(rec["data"], y.numpy()), f"{mode} dim {dim}"
    # the raw read-out (M = 2, S = 1, B = 0, out_bits = 32) decodes to intops.attention
    env.write_params(p_base, torch.full((DM,), 2), torch.ones(DM, dtype=torch.int32),
                     torch.zeros(DM, dtype=torch.int32))
    raw_windows = 0
    for mode in ("dot", "hamming"):
        dim = DM
        n = max(2, min(NT, 6, (MP - 1) // (3 + 4 * dim) - 1))
        k, v, q = (spikes(env.gen, n, dim, 0.3) for _ in range(3))
        q[1] = 0
        cmds = encode_window(k, v, q, mode, compact=True)
        payload = req_attention(cmds, mode=MODES[mode], dim=dim, tokens=cmds[0]["tokens"], p_base=p_base,
                                out_bits=32)
        n_q = sum(1 for c in cmds if c["op"] == 2)
        if len(payload) > MP or 1 + n_q * (3 + 4 * dim) > MP:
            continue
        raw_windows += 1
        t = env.req(pr.OP_ATTENTION, payload)
        f = await env.expect(f"raw attention {mode}", t, pr.OK)
        beats = [{"group": 0, "last": 1, "skip": r["skip"], "const": r["const"], "data": r["data"].tolist()}
                 for r in attention_records(f, dim, 32)]
        dense = decode_readout(beats, n, dim, dim, mode)
        assert torch.equal(dense, intops.attention(q, k, v, mode)), f"raw {mode}"
    assert raw_windows and windows >= 8, (raw_windows, windows)
    t = env.req(pr.OP_COUNTERS)
    await env.expect("counters", t, pr.OK)


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_attention_errors(dut):
    """ATTENTION command-stream errors (ERR_LENGTH / ERR_RANGE / ERR_UNLOADED) and recovery."""
    env = await new_env(dut, 7)
    DM, NT, PC = CFG.att_dim_max, CFG.att_max_tokens, CFG.param_channels
    dim = min(DM, 10) if DM > 1 else 1
    d = pr.nbytes_bits(dim)
    hdr = pr.ATTENTION_HEADER.pack(0, dim, 2, 0, 16)
    kv = bytes((pr.CMD_KV,)) + (1).to_bytes(d, "little") + (1).to_bytes(d, "little")
    q = bytes((pr.CMD_Q, 0, 0)) + (1).to_bytes(d, "little")
    const = bytes((pr.CMD_CONST,))
    good = hdr + kv + kv + q + const + q
    t = env.req(pr.OP_ATTENTION, good)
    await env.expect("unloaded params", t, pr.ERR_UNLOADED)
    m, s, b = random_params(env.gen, dim)
    env.write_params(0, m, s, b)
    cases = [
        (good, pr.OK),
        (hdr + kv + q, pr.ERR_LENGTH),                               # a KV token missing
        (hdr + kv + kv + kv + q, pr.ERR_LENGTH),                     # one too many
        (hdr + kv + q + kv, pr.ERR_LENGTH),                          # KV after Q
        (hdr + kv + kv + q[:-1], pr.ERR_LENGTH),                     # cut off
        (hdr + kv + kv[:-1], pr.ERR_LENGTH),
        (hdr + kv + kv + bytes((9,)) + q, pr.ERR_RANGE),             # unknown type
        (hdr + kv + bytes((0,)), pr.ERR_RANGE),
        (hdr[:6], pr.ERR_LENGTH),
        (pr.ATTENTION_HEADER.pack(0, dim, 1, 0, 16) + bytes((pr.CMD_V_PAIR,)) + bytes(2 * d), pr.ERR_LENGTH),
        # a V pair past the token count fails at once (not at the unknown type after it)
        (pr.ATTENTION_HEADER.pack(0, dim, 1, 0, 16) + bytes((pr.CMD_V_PAIR,)) + bytes(2 * d) + bytes((9,)),
         pr.ERR_LENGTH),
        (hdr + kv + bytes((pr.CMD_V_PAIR,)) + bytes(2 * d) + bytes((9,)), pr.ERR_LENGTH),
        (pr.ATTENTION_HEADER.pack(2, dim, 2, 0, 16) + kv + kv + q, pr.ERR_RANGE),       # mode
        (pr.ATTENTION_HEADER.pack(0, dim, 2, 0, 24) + kv + kv + q, pr.ERR_RANGE),       # out_bits
        (pr.ATTENTION_HEADER.pack(0, dim, 2, PC - dim + 1, 16) + kv + kv + q, pr.ERR_RANGE),
        (pr.ATTENTION_HEADER.pack(0, dim, 2, 1, 16) + kv + kv + q, pr.ERR_UNLOADED),
        (pr.ATTENTION_HEADER.pack(0, DM + 1, 0, 0, 16) + const, pr.ERR_RANGE),           # dim > D_MAX
        (pr.ATTENTION_HEADER.pack(0, 0, 0, 0, 16) + const, pr.ERR_RANGE),
        (pr.ATTENTION_HEADER.pack(0, dim, 0, 0, 16) + const + const, pr.OK),             # an empty window
        (pr.ATTENTION_HEADER.pack(1, dim, 0, 0, 8), pr.OK),                              # no Q command at all
    ]
    if NT < 0xFFFF:
        cases.append((pr.ATTENTION_HEADER.pack(0, dim, NT + 1, 0, 16)
                      + (bytes((pr.CMD_KV,)) + bytes(2 * d)) * (NT + 1), pr.ERR_RANGE))
    if dim % 8:                                                      # a bit at index >= dim
        cases.append((hdr + kv + bytes((pr.CMD_KV,)) + (1 << (8 * d - 1)).to_bytes(d, "little") + bytes(d) + q,
                      pr.ERR_RANGE))
        cases.append((hdr + kv + kv + bytes((pr.CMD_Q, 0, 0)) + (1 << (8 * d - 1)).to_bytes(d, "little"),
                      pr.ERR_RANGE))
    tags = []
    for payload, want in cases:
        if len(payload) <= MP:
            tags.append((env.req(pr.OP_ATTENTION, payload), want))
    frames = await env.sync("attention errors")
    for tag, want in tags:
        assert env.by_tag(frames, tag).status == want, (tag, want, env.by_tag(frames, tag).status)


# --------------------------------------------------------------------------------------------
# Resets, mixed traffic
# --------------------------------------------------------------------------------------------

@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_reset_mid_frame(dut):
    """A hardware reset in the middle of a frame: the device comes back in its power-on state."""
    env = await new_env(dut, 8)
    c_in, c_out = min(CFG.in_max, 10), P
    w = torch.randint(-128, 128, (c_out, c_in), generator=env.gen, dtype=torch.int8)
    env.write_weights(0, weight_rows(w, P))
    m, s, b = random_params(env.gen, c_out)
    env.write_params(0, m, s, b)
    env.req(pr.OP_WRITE_LIF, req_write_lif(3, 2, 100))
    x = spikes(env.gen, 3, c_in, 0.5)
    sent = env.linear(x, c_out=c_out, w_base=0, p_base=0, out_bits=16)
    await env.sync("before the reset")
    frame = pr.encode_frame(pr.OP_LINEAR, 0x99, req_linear(x, c_out=c_out, w_base=0, p_base=0, out_bits=16))
    for b_ in frame[:len(frame) // 2]:
        env.src.send_nowait(b_)                                      # not fed to the emulator: lost in the reset
    await env.src.idle()
    await ClockCycles(dut.clk, 5)
    await env.reset()
    t1 = env.req(pr.OP_COUNTERS)
    t2 = env.req(pr.OP_LINEAR, req_linear(x, c_out=c_out, w_base=0, p_base=0, out_bits=16))
    t3 = env.req(pr.OP_LIF, req_lif(torch.zeros(1, 2, dtype=torch.int32), neuron=0, first=0))
    frames = await env.sync("after the reset")
    assert env.by_tag(frames, t1).status == pr.OK
    assert env.by_tag(frames, t2).status == pr.ERR_UNLOADED and env.by_tag(frames, t3).status == pr.ERR_UNLOADED
    env.write_weights(0, weight_rows(w, P))
    env.write_params(0, m, s, b)
    sent = env.linear(x, c_out=c_out, w_base=0, p_base=0, out_bits=16)
    frames = await env.sync("after the reset, reloaded")
    got = values(env.by_tag(frames, sent[0][0]).data, 16).reshape(3, c_out)
    assert np.array_equal(got, env.linear_golden(x, c_out=c_out, w_base=0, p_base=0, out_bits=16).numpy())


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_mixed(dut):
    """Pipelined random traffic: every op interleaved with damaged frames and garbage, under heavy stalls."""
    env = await new_env(dut, 9, idle=0.5, backpressure=0.8)
    C, R, PC, DM = CFG.in_max, CFG.weight_rows, CFG.param_channels, CFG.att_dim_max
    c_in, c_out = min(C, 20), 2 * P
    w = torch.randint(-128, 128, (c_out, c_in), generator=env.gen, dtype=torch.int8)
    w_base = R - c_in * 2
    env.write_weights(w_base, weight_rows(w, P))
    m, s, b = random_params(env.gen, PC)
    env.write_params(0, m, s, b)
    env.req(pr.OP_WRITE_LIF, req_write_lif(5, 3, 40))
    linear = []
    for i in range(30):
        if i % 6 == 0:
            env.random_pauses()
        kind = env.rng.randrange(7)
        if kind == 0:
            x = spikes(env.gen, env.rng.randint(0, 6), c_in, 0.3)
            args = {"c_out": c_out, "w_base": w_base, "p_base": env.rng.randint(0, PC - c_out),
                    "out_bits": env.rng.choice((8, 16, 32))}
            linear.append((env.linear(x, **args), x, args))
        elif kind == 1:
            y = torch.randint(-2000, 2000, (env.rng.randint(1, 4), env.rng.randint(1, 2 * P)), generator=env.gen,
                              dtype=torch.int32)
            env.req(pr.OP_LIF, req_lif(y, neuron=env.rng.randint(0, 4), first=env.rng.randint(0, 1)))
        elif kind == 2:
            dim = env.rng.randint(1, DM)
            k, v, q = (spikes(env.gen, 4, dim, 0.3) for _ in range(3))
            cmds = encode_window(k, v, q, env.rng.choice(("dot", "hamming")))
            env.req(pr.OP_ATTENTION, req_attention(cmds, mode=cmds[0]["mode"], dim=dim, tokens=cmds[0]["tokens"],
                                                   p_base=env.rng.randint(0, PC - dim), out_bits=16))
        elif kind == 3:
            bad = bytearray(pr.encode_frame(pr.OP_LIF, 0xEE, bytes(12)))
            bad[env.rng.choice([1, 2, 3] + list(range(6, len(bad))))] ^= 0x10       # framing kept
            env.raw(bytes(bad))
        elif kind == 4:
            env.raw(bytes(env.rng.randrange(256) for _ in range(env.rng.randint(1, 6))).replace(b"\xa5", b""))
        elif kind == 5:
            env.req(pr.OP_COUNTERS)
        else:
            env.req(env.rng.choice((pr.OP_INFO, 0x33)))
    frames = await env.sync("mixed traffic", max_cycles=2_000_000)
    for sent, x, args in linear:                                     # exact among the damaged frames
        want = env.linear_golden(x, **args).numpy()
        for tag, lo, n in sent:
            f = env.by_tag(frames, tag)
            assert f.status == pr.OK and np.array_equal(values(f.data, args["out_bits"]).reshape(n, c_out),
                                                        want[lo:lo + n])
    t = env.req(pr.OP_COUNTERS)
    f = await env.expect("counters", t, pr.OK)
    c = _counters(f)
    assert c["linear_busy"] > 0 and c["requant_lif_busy"] > 0
    assert all(k in c for k in UNMODELLED_COUNTERS)


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_latency(dut):
    """Cycles from a request's last byte to its response's first byte, no gaps (logged for docs/accelerator.md).

    The bounds are the op's work as the executor does it: the checks, one byte per cycle for the frame
    buffer walks and the response writes; they catch a stall, not a few cycles."""
    env = await new_env(dut, 10, idle=0.0, backpressure=0.0)
    env.random_pauses(0.0, 0.0)
    rx_last, tx_first = [0], [0]
    env.src.add_callback(lambda b: rx_last.__setitem__(0, env.loop.cycle))
    env.sink.add_callback(lambda b: tx_first.__setitem__(0, tx_first[0] or env.loop.cycle))
    C, DM = CFG.in_max, CFG.att_dim_max
    c_in, c_out = C, 4 * P if C * 4 <= CFG.weight_rows else P
    w = torch.randint(-128, 128, (c_out, c_in), generator=env.gen, dtype=torch.int8)
    env.write_weights(0, weight_rows(w, P))
    m, s, b = random_params(env.gen, max(c_out, DM))
    env.write_params(0, m, s, b)
    env.req(pr.OP_WRITE_LIF, req_write_lif(3, 2, 100))
    await env.sync("setup")
    k, v, q = (spikes(env.gen, 8, DM, 0.2) for _ in range(3))
    cmds = encode_window(k, v, q, "hamming")
    lif_ch = 4 * P
    x = spikes(env.gen, max(1, min(8, (MP - 1) // c_out)), c_in, 0.1)
    rows = min((MP - 4) // P, 60)
    ops = [
        ("INFO", pr.OP_INFO, b""),
        ("COUNTERS", pr.OP_COUNTERS, b""),
        (f"WRITE_WEIGHTS {rows} rows", pr.OP_WRITE_WEIGHTS, req_write_weights(0, weight_rows(w, P)[:rows])),
        (f"LINEAR {x.shape[0]} x {c_in} -> {c_out}, 10 % spikes, 8 bit", pr.OP_LINEAR,
         req_linear(x, c_out=c_out, w_base=0, p_base=0, out_bits=8)),
        (f"LIF 4 x {lif_ch}", pr.OP_LIF, req_lif(torch.randint(-500, 500, (4, lif_ch), generator=env.gen,
                                                                dtype=torch.int32), neuron=0, first=1)),
        (f"ATTENTION hamming dim {DM}, 8 tokens, 16 bit", pr.OP_ATTENTION,
         req_attention(cmds, mode=1, dim=DM, tokens=cmds[0]["tokens"], p_base=0, out_bits=16)),
        ("RESET", pr.OP_RESET, b""),
    ]
    n_q = sum(1 for c in cmds if c["op"] == 2)
    for name, op, payload in ops:
        if len(payload) > MP or (op == pr.OP_ATTENTION and 1 + n_q * (3 + 2 * DM) > MP):
            continue
        tx_first[0] = 0
        t = env.req(op, payload)
        f = await env.expect(name, t, pr.OK)
        took = tx_first[0] - rx_last[0]
        dut._log.info("latency %-48s request %5d B, response %5d B: %6d cycles", name, len(payload) + 8,
                      len(f.payload) + 8, took)
        assert 0 < took < 20 * (len(payload) + len(f.payload)) + 4 * max(CFG.weight_rows, CFG.membrane_rows) + 100
