"""cocotb testbench of ``rtl.spike_accum.SpikeAccumulator`` (``docs/spike_accum.md``).

* **Drivers**: :class:`~sim.streams.StreamSource` on ``cmd`` and on ``wload`` (random idle cycles),
  :class:`~sim.streams.StreamSink` on ``out`` (random backpressure, stream-rule checks).
* **Monitors -> reference model**: :class:`~sim.streams.StreamMonitor` on ``cmd`` and ``wload`` hand
  every command and weight row the engine *accepted* to :class:`sim.spike_accum_model.SpikeAccumModel`
  (``intops.linear_int8`` on the weights as loaded, the error states of the interface page, the cycle
  model ``golden_model.perf.spike_accum_cycles``). The command monitor runs before the weight monitor
  within a clock edge, as the RTL lets a weight-address error win over the command of the same cycle.
* **Scoreboard**: each output beat is compared with ``==`` to the next expected beat; whenever the
  engine is drained, ``error`` / ``error_code`` and the counters ``busy_cycles``, ``spikes``,
  ``acc_ops`` are compared exactly, ``busy + starved + blocked`` equals the cycles since the counter
  clear, and ``starved`` / ``blocked`` are bounded by the source idle / sink stall cycles.

Whole layers are also checked end to end: their beats are decoded by the host code
(``driver.spike_accum.decode_beats``) and compared with ``intops.linear_int8(x, weight)`` or, for real
layers of the shipped models (``SPIKEVID_TB_LAYERS``, a ``.pt`` file of :mod:`sim.layer_traces`), with
the accumulators traced in the integer model.

The configuration (``in_max``, ``lanes``, ``weight_rows``) comes from the pytest wrapper
(:func:`sim.verilator.tb_params`).
"""

from __future__ import annotations

import os
import random
from collections import deque

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, RisingEdge

from driver.spike_accum import (
    config_cmd,
    decode_beats,
    encode_tokens,
    output_tiles,
    token_popcounts,
    weight_rows,
)
from golden_model import intops
from golden_model.perf import spike_accum_cycles
from rtl.spike_accum import (
    ERR_BITS,
    ERR_DIM,
    ERR_NO_CONFIG,
    ERR_NONE,
    ERR_OP,
    ERR_ROWS,
    ERR_WADDR,
    LATENCY,
    OP_CONFIG,
    OP_STATUS_CLEAR,
    OP_TOKEN,
    acc_width,
    cmd_layout,
    out_layout,
    wload_layout,
)
from sim.spike_accum_model import SpikeAccumModel
from sim.streams import ClockLoop, StreamMonitor, StreamSink, StreamSource, random_pauses, value_int
from sim.verilator import tb_params

PARAMS = tb_params()
LAYERS_ENV = "SPIKEVID_TB_LAYERS"
TEST_TIMEOUT_MS = 400  # simulated time limit of each cocotb test (10 ns clock: 40 M cycles)
STATUS = ("error", "error_code", "busy", "busy_cycles", "starved_cycles", "blocked_cycles", "spikes", "acc_ops")


def random_weight(gen: torch.Generator, c_out: int, c_in: int, extreme: float = 0.3) -> torch.Tensor:
    """int8 weights, a fraction ``extreme`` of them at -128 or 127."""
    w = torch.randint(-128, 128, (c_out, c_in), generator=gen, dtype=torch.int16)
    pick = torch.rand(c_out, c_in, generator=gen)
    return torch.where(pick < extreme / 2, -128, torch.where(pick < extreme, 127, w)).to(torch.int8)


def spikes(gen: torch.Generator, n: int, c_in: int, density: float) -> torch.Tensor:
    """``(n, c_in)`` int8 spikes, each 1 with probability ``density`` (0 and 1 exact)."""
    if density <= 0:
        return torch.zeros(n, c_in, dtype=torch.int8)
    if density >= 1:
        return torch.ones(n, c_in, dtype=torch.int8)
    return (torch.rand(n, c_in, generator=gen) < density).to(torch.int8)


# --------------------------------------------------------------------------------------------
# Environment: clock, reset, drivers, monitors, sink, reference model, scoreboard
# --------------------------------------------------------------------------------------------


class Env:
    def __init__(self, dut, seed: int, *, idle: float = 0.2, backpressure: float = 0.3, idle_burst: int = 4,
                 bp_burst: int = 8):
        self.dut = dut
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.C, self.P, self.R = PARAMS["in_max"], PARAMS["lanes"], PARAMS["weight_rows"]
        self.acc_w = PARAMS.get("acc_w") or acc_width(self.C)
        self.cmd_layout = cmd_layout(self.C)
        self.wload_layout = wload_layout(self.P)
        self.out_layout = out_layout(self.P, self.R, self.acc_w)
        self.model = SpikeAccumModel(self.C, self.P, self.R)
        self.expected: deque = deque()
        self.mismatches: list[str] = []
        self.beats_checked = 0
        self.record: list[dict] | None = None   # beats of the current layer run (for decoding)
        self._levels = (idle, idle_burst, backpressure, bp_burst)

    async def start(self) -> Env:
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.rst.value = 1
        dut.counters_clear.value = 0
        dut.cmd__valid.value = 0
        dut.wload__valid.value = 0
        dut.out__ready.value = 0
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        self.loop = ClockLoop(dut.clk)
        self.src = StreamSource(dut, "cmd", self.cmd_layout, self.loop)
        self.wsrc = StreamSource(dut, "wload", self.wload_layout, self.loop)
        self.mon = StreamMonitor(dut, "cmd", self.cmd_layout, self.loop)    # before wmon: see module docs
        self.wmon = StreamMonitor(dut, "wload", self.wload_layout, self.loop)
        self.sink = StreamSink(dut, "out", self.out_layout, self.loop, keep=False)
        self.pauses(*self._levels)
        self.mon.add_callback(lambda c: self.expected.extend(self.model.command(c)))
        self.wmon.add_callback(self.model.wload)
        self.sink.add_callback(self._on_beat)
        self.probe = _Probe(self)
        self.loop.add(self.probe)
        await RisingEdge(dut.clk)
        return self

    def pauses(self, idle: float, idle_burst: int, backpressure: float, bp_burst: int) -> None:
        """New random idle (cmd and wload) / backpressure generators, seeded from the test seed."""
        s = self.rng.randrange(1 << 30)
        self.src.set_pauses(random_pauses(s, idle, burst=idle_burst))
        self.wsrc.set_pauses(random_pauses(s + 2, idle, burst=idle_burst))
        self.sink.set_pauses(random_pauses(s + 1, backpressure, burst=bp_burst))

    def random_pauses(self) -> None:
        self.pauses(self.rng.choice((0.0, 0.1, 0.3, 0.6)), self.rng.randint(1, 6),
                    self.rng.choice((0.0, 0.2, 0.5, 0.8)), self.rng.randint(1, 12))

    def _on_beat(self, beat: dict) -> None:
        self.beats_checked += 1
        if self.record is not None:
            self.record.append(beat)
        if not self.expected:
            self.mismatches.append(f"unexpected beat #{self.beats_checked}: {beat}")
            return
        want, ctx = self.expected.popleft()
        if beat != want:
            diff = [(i, g, w) for i, (g, w) in enumerate(zip(beat["data"], want["data"], strict=True)) if g != w]
            self.mismatches.append(f"{ctx}: lanes (lane, got, want) {diff[:8]}, group {beat['group']}/"
                                   f"{want['group']} last {beat['last']}/{want['last']} skip {beat['skip']}/"
                                   f"{want['skip']}")

    # ---- weight loads and commands ---------------------------------------------------------------
    async def load(self, weight: torch.Tensor, base: int = 0) -> None:
        """Queue a layer's weight rows and wait until the engine took them all."""
        for row in weight_rows(weight, self.P, base):
            self.wsrc.send_nowait(row)
        await self.wsrc.idle()

    def cmd(self, c: dict) -> None:
        self.src.send_nowait(c)

    def config(self, c_in: int, c_out: int, base: int = 0) -> None:
        self.cmd(config_cmd(c_in, c_out, self.P, base))

    def tokens(self, x: torch.Tensor, *, compact: bool) -> list[int]:
        """Queue the TOKEN commands of ``x``; returns their popcounts."""
        cmds = encode_tokens(x, compact=compact)
        for c in cmds:
            self.cmd(c)
        return token_popcounts(cmds)

    async def run_layer(self, x: torch.Tensor, weight: torch.Tensor, *, compact: bool, base: int = 0,
                        load: bool = True) -> torch.Tensor:
        """Load (optionally), CONFIG, all tokens, drain; the decoded accumulators ``(n, c_out)``."""
        await self.drain()
        if load:
            await self.load(weight, base)
        self.record = []
        self.config(x.shape[1], weight.shape[0], base)
        self.tokens(x, compact=compact)
        await self.drain()
        beats, self.record = self.record, None
        return decode_beats(beats, x.shape[0], weight.shape[0], self.P)

    # ---- status -------------------------------------------------------------------------------
    def status(self) -> dict:
        return {name: value_int(getattr(self.dut, f"status__{name}")) for name in STATUS}

    async def clear_counters(self) -> None:
        await self.drain()
        await self.probe.clear()
        self.model.clear_counters()

    async def drain(self, stuck_cycles: int | None = None) -> None:
        """Wait until every command and weight row is accepted, every expected beat arrived, the engine idle."""
        if stuck_cycles is None:
            stuck_cycles = 4 * self.C * self.R + 3000
        quiet = still = 0
        progress = (self.src.transfers, self.wsrc.transfers, self.sink.transfers)
        while still < stuck_cycles:
            if self.src.pending() or self.wsrc.pending() or self.expected:
                quiet = 0
                await ClockCycles(self.dut.clk, 16)
                now = (self.src.transfers, self.wsrc.transfers, self.sink.transfers)
                still = still + 16 if now == progress else 0
                progress = now
                continue
            await RisingEdge(self.dut.clk)
            still += 1
            quiet = quiet + 1 if not value_int(self.dut.status__busy) else 0
            if quiet >= 3:
                return
        raise AssertionError(
            f"engine stuck for {still} cycles: {self.src.pending()} commands / {self.wsrc.pending()} rows not "
            f"accepted, {len(self.expected)} expected beats missing (next: "
            f"{self.expected[0][1] if self.expected else '-'}), status {self.status()}")

    async def check(self, what: str = "", *, counters: bool = True) -> dict:
        """Drain, then compare beats, status and counters with the reference exactly."""
        await self.drain()
        st, cycles = await self.probe.snapshot()
        assert not self.sink.protocol_errors, self.sink.protocol_errors[:5]
        assert not self.mismatches, f"{what}: {len(self.mismatches)} beat mismatches:\n" + "\n".join(
            self.mismatches[:12])
        assert (st["error"], st["error_code"]) == self.model.status(), \
            f"{what}: status error/code {st['error']}/{st['error_code']}, reference {self.model.status()}"
        if counters:
            got = {k: st[k] for k in ("busy_cycles", "spikes", "acc_ops")}
            want = {"busy_cycles": self.model.busy_cycles, "spikes": self.model.spikes,
                    "acc_ops": self.model.acc_ops}
            assert got == want, f"{what}: counters {got}, golden_model.perf {want}"
            total = st["busy_cycles"] + st["starved_cycles"] + st["blocked_cycles"]
            assert total == cycles, f"{what}: busy+starved+blocked = {total}, cycles since clear {cycles}"
            stalls, idles = self.probe.sink_stall_cycles, self.probe.src_idle_cycles
            assert st["blocked_cycles"] <= stalls, f"{what}: blocked {st['blocked_cycles']} > sink stalls {stalls}"
            assert st["starved_cycles"] <= idles, f"{what}: starved {st['starved_cycles']} > source idle {idles}"
        return st


class _Probe:
    """Clock-loop endpoint: pulses ``counters_clear``, snapshots the status, counts idle / stall cycles.

    The clear is sampled at edge ``c1``; a snapshot at edge ``c`` reads the counters just before ``c``,
    which count the cycles ending at edges ``c1 + 1 .. c - 1``: ``c - c1 - 1`` cycles.
    ``src_idle_cycles`` (``cmd.valid = 0``) and ``sink_stall_cycles`` (``out.valid & ~out.ready``)
    count the same cycles.
    """

    def __init__(self, env: Env):
        self.env = env
        dut = env.dut
        self.cv, self.ov, self.orr, self.clr = dut.cmd__valid, dut.out__valid, dut.out__ready, dut.counters_clear
        self.handles = [(n, getattr(dut, f"status__{n}")) for n in STATUS]
        self.clear_cycle = 0
        self.src_idle_cycles = self.sink_stall_cycles = 0
        self._clear = 0   # 1: drive clear at the next drive, 2: driven, sampled at the next edge
        self._snap: tuple[Event, list] | None = None
        self._clear_done: Event | None = None

    async def clear(self) -> None:
        self._clear = 1
        self._clear_done = Event()
        await self._clear_done.wait()

    async def snapshot(self) -> tuple[dict, int]:
        ev, box = Event(), []
        self._snap = (ev, box)
        await ev.wait()
        return box[0], box[1]

    def _sample(self) -> None:
        cycle = self.env.loop.cycle
        if self._snap is not None:
            ev, box = self._snap
            self._snap = None
            box += [{n: value_int(h) for n, h in self.handles}, cycle - self.clear_cycle - 1]
            ev.set()
        if self._clear == 2:
            self._clear = 0
            self.clear_cycle = cycle
            self.src_idle_cycles = self.sink_stall_cycles = 0
            self.clr.value = 0
            self._clear_done.set()
            return
        if not self.cv.value:
            self.src_idle_cycles += 1
        if self.ov.value and not self.orr.value:
            self.sink_stall_cycles += 1

    def _drive(self) -> None:
        if self._clear == 1:
            self.clr.value = 1
            self._clear = 2


async def new_env(dut, seed: int, **kw) -> Env:
    env = await Env(dut, seed, **kw).start()
    await env.clear_counters()
    return env


def layer_shape(env: Env) -> tuple[int, int]:
    """The largest ``(c_in, c_out)`` with ``c_in = C_IN_MAX`` and whole groups that fits the memory."""
    c_in = min(env.C, env.R)
    return c_in, max(1, min(4, env.R // c_in)) * env.P


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_densities(dut):
    """Random spikes at densities 0, 1 %, 10 %, 50 %, 100 % on a full-width layer, extreme weights, both encodings."""
    env = await new_env(dut, 31)
    c_in, c_out = layer_shape(env)
    c_out -= 1                                     # a partial last group
    w = random_weight(env.gen, c_out, c_in)
    await env.load(w)
    env.config(c_in, c_out)
    pcs: list[int] = []
    for i, density in enumerate((0.0, 0.01, 0.1, 0.5, 1.0)):
        env.random_pauses()
        n = 24 if density < 0.5 else 6
        x = spikes(env.gen, n, c_in, density)
        x[0] = 1 - x[0]                            # one token of the opposite density
        pcs += env.tokens(x, compact=bool(i % 2))
        await env.check(f"density {density}")
    assert env.model.busy_cycles == spike_accum_cycles(pcs, c_out, env.P)["busy"]
    # end to end through the host code: both encodings decode to intops.linear_int8
    for compact in (False, True):
        x = spikes(env.gen, 40, c_in, 0.05)
        x[5:20] = 0
        acc = await env.run_layer(x, w, compact=compact, load=False)
        assert torch.equal(acc, intops.linear_int8(x, w)), f"decoded layer, compact={compact}"
    await env.check("decoded layers")


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_extremes(dut):
    """All inputs active, W = -128 / 127 everywhere: |acc| = 128 * C_IN_MAX reaches the top bit of acc_w."""
    env = await new_env(dut, 32, idle=0.05, backpressure=0.3)
    c_in, c_out = layer_shape(env)
    ones = torch.ones(3, c_in, dtype=torch.int8)
    for val in (-128, 127):
        w = torch.full((c_out, c_in), val, dtype=torch.int8)
        w[1, ::2] = -val - 1                       # mixed signs on one output
        acc = await env.run_layer(ones, w, compact=False)
        assert torch.equal(acc, intops.linear_int8(ones, w))
    await env.check("extremes")
    assert (env.model.acc_min, env.model.acc_max) == (-128 * env.C, 127 * env.C)
    assert -(1 << (env.acc_w - 1)) <= -128 * env.C < -(1 << (env.acc_w - 2))   # acc_w is tight


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_tiling(dut):
    """Layers at different bases, double buffering, c_in < C_IN_MAX, c_in = 1, the top row, random skips."""
    env = await new_env(dut, 33)
    C, P, R = env.C, env.P, env.R
    # A: c_in = C_IN_MAX/2 + 1 at base 0; B: c_in = 3 ending at the last row
    ca, cb = C // 2 + 1, min(3, C)
    ga = max(1, min(3, (R - 3 * 2) // ca))
    wa = random_weight(env.gen, ga * P - (P > 1), ca)
    gb = max(1, min(2, (R - ca * ga) // cb))
    wb = random_weight(env.gen, gb * P, cb)
    base_b = R - cb * gb
    assert base_b >= ca * ga
    xa, xb = spikes(env.gen, 16, ca, 0.3), spikes(env.gen, 16, cb, 0.5)
    await env.load(wa, 0)
    env.random_pauses()
    env.config(ca, wa.shape[0], 0)
    env.tokens(xa, compact=True)
    await env.load(wb, base_b)                     # while A runs: B's rows are not A's
    env.config(cb, wb.shape[0], base_b)
    env.tokens(xb, compact=False)
    env.config(ca, wa.shape[0], 0)                 # A again, still resident
    env.tokens(xa[:5], compact=False)
    await env.check("two resident layers")
    for _ in range(20):                            # random skip counts ride along unchanged
        env.cmd({"op": OP_TOKEN, "x": env.rng.getrandbits(ca), "skip": env.rng.choice((0, 1, 0xFFFF,
                                                                                          env.rng.getrandbits(16)))})
    await env.check("random skips")
    # c_in = 1 and one group over the whole memory (G = rows), then a layer filling every row
    w1 = random_weight(env.gen, R * P, 1)
    acc = await env.run_layer(spikes(env.gen, 6, 1, 0.5), w1, compact=False)
    assert acc.shape == (6, R * P)
    g_all = R // C
    if g_all >= 1:
        wf = random_weight(env.gen, g_all * P, C)
        x = spikes(env.gen, 4, C, 0.2)
        base = R - C * g_all
        assert torch.equal(await env.run_layer(x, wf, compact=False, base=base), intops.linear_int8(x, wf))
    await env.check("whole memory")
    # a layer that does not fit: output tiles, the tokens sent once per tile
    c_out = 2 * (R // C) * P + 3 if R // C >= 1 else P
    w = random_weight(env.gen, c_out, C)
    x = spikes(env.gen, 10, C, 0.1)
    tiles = output_tiles(C, c_out, P, R)
    assert len(tiles) >= 2 or R // C < 1
    acc = torch.cat([await env.run_layer(x, w[o0:o1], compact=True) for o0, o1 in tiles], dim=1)
    assert torch.equal(acc, intops.linear_int8(x, w)), "tiled layer"
    await env.check("tiled layer")


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_errors(dut):
    """Every error code: status set, the command dropped, later tokens dropped, exact after recovery."""
    env = await Env(dut, 34).start()               # no counter clear: check reset values first
    st = env.status()
    starved = st.pop("starved_cycles")
    assert st == dict.fromkeys(st, 0) and starved <= 2, (st, starved)
    await env.clear_counters()
    C, P, R = env.C, env.P, env.R
    c_in = min(max(1, C - 3), R)                   # below C_IN_MAX, so a bit at c_in is out of range
    g = 2 if 2 * c_in + 2 <= R else 1
    c_out = P * (g - 1) + 1 if g == 2 else P       # G = g, a partial last group when P > 1
    base = min(2, R - c_in * g)
    w = random_weight(env.gen, c_out, c_in)
    x = spikes(env.gen, 3, c_in, 0.5)
    await env.load(w, base)
    tok = {"op": OP_TOKEN, "x": 1, "skip": 7}

    def good() -> None:
        env.config(c_in, c_out, base)
        env.tokens(x, compact=False)

    async def case(what: str, code: int) -> None:
        env.random_pauses()
        await env.check(what)
        assert env.model.error_code == code, f"{what}: the reference expects code {env.model.error_code}"
        env.cmd(tok)                               # dropped after the error, code unchanged
        await env.check(f"{what}: dropped token")
        good()
        await env.check(f"{what}: recovery")
        assert env.model.status() == (0, ERR_NONE)

    env.cmd(tok)
    await case("TOKEN before any CONFIG", ERR_NO_CONFIG)
    for c, code in (({"c_in": 0, "groups": 1}, ERR_DIM), ({"c_in": C + 1, "groups": 1}, ERR_DIM),
                    ({"c_in": 2047, "groups": 0xFFFF, "base": 0xFFFF}, ERR_DIM), ({"c_in": 1, "groups": 0}, ERR_DIM),
                    ({"c_in": 1, "groups": 1, "base": R}, ERR_ROWS), ({"c_in": C, "groups": 0xFFFF}, ERR_ROWS),
                    ({"c_in": c_in, "groups": R // c_in + 1}, ERR_ROWS),
                    ({"c_in": 1, "groups": R, "base": 1}, ERR_ROWS)):
        env.cmd({"op": OP_CONFIG, **c})
        await case(f"CONFIG {c}", code)
    env.cmd({"op": OP_CONFIG, "c_in": 1, "groups": R, "base": 0})   # exactly every row: valid
    await env.check("CONFIG of every row")
    assert env.model.status() == (0, ERR_NONE)
    if c_in < C:
        good()
        env.cmd({"op": OP_TOKEN, "x": 1 << c_in})  # a bit at c_in
        await case("x bit at c_in", ERR_BITS)
        env.config(c_in, c_out, base)
        env.cmd({"op": OP_TOKEN, "x": 1 << (C - 1)})
        await case("x bit at C_IN_MAX - 1", ERR_BITS)
    env.cmd({"op": 2})
    await case("reserved op", ERR_OP)
    env.cmd({"op": OP_TOKEN, "x": 1})              # after STATUS_CLEAR no layer is configured
    env.cmd({"op": OP_STATUS_CLEAR})
    env.cmd({"op": OP_TOKEN, "x": 1})
    await case("TOKEN after STATUS_CLEAR", ERR_NO_CONFIG)
    env.cmd({"op": OP_CONFIG, "c_in": 0, "groups": 1})                # two invalid CONFIGs: the latest code
    env.cmd({"op": OP_CONFIG, "c_in": 1, "groups": 1, "base": R})
    await case("two invalid CONFIGs", ERR_ROWS)
    # weight-address errors: the row is dropped, the error stays across a valid CONFIG until STATUS_CLEAR
    if R < 0x10000:
        env.wsrc.send_nowait({"addr": R, "data": [1] * P})
        env.wsrc.send_nowait({"addr": 0xFFFF, "data": [-128] * P})
    await env.check("weight address out of range")
    assert env.model.status() == ((1, ERR_WADDR) if R < 0x10000 else (0, ERR_NONE))
    good()                                         # tokens still run, exact
    env.cmd({"op": OP_TOKEN, "x": 1 << c_in} if c_in < C else {"op": 2})   # a command error on top
    await env.check("command error on a weight error")
    good()                                         # CONFIG: back to the weight error's code
    await env.check("CONFIG keeps the weight error")
    assert env.model.status() == ((1, ERR_WADDR) if R < 0x10000 else (0, ERR_NONE))
    env.cmd({"op": OP_STATUS_CLEAR})
    good()
    await env.check("STATUS_CLEAR")
    assert env.status()["error"] == 0


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_backpressure(dut):
    """Output-bound runs under long sink stalls: no beat lost or duplicated, blocked cycles counted."""
    env = await new_env(dut, 35, idle=0.05, backpressure=0.2, bp_burst=200)
    c_in, c_out = layer_shape(env)
    w = random_weight(env.gen, c_out, c_in)
    await env.load(w)
    env.config(c_in, c_out)
    x = spikes(env.gen, 60, c_in, 2.0 / c_in)      # ~2 spikes per token: about a beat per 2 cycles
    x[::3] = 0                                     # and empty tokens: a beat per cycle
    env.tokens(x, compact=False)
    st = await env.check("long stalls")
    assert st["blocked_cycles"] > 0, "output-bound run with stalls but no blocked cycle"
    env.pauses(0.0, 1, 1.0, 1)                     # a sink that is never ready for a while
    env.tokens(spikes(env.gen, 10, c_in, 0.1), compact=False)
    await ClockCycles(dut.clk, 300)
    assert env.sink.transfers == env.beats_checked
    assert not value_int(dut.cmd__ready) or not env.src.pending(), "the engine kept accepting with a full skid"
    env.pauses(0.1, 3, 0.5, 4)
    await env.check("stall then release")


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_cycle_model(dut):
    """Back to back with a ready sink: first command to last beat = busy + LATENCY cycles; counters exact."""
    env = await new_env(dut, 36, idle=0.0, backpressure=0.0)
    c_in, c_out = layer_shape(env)
    w = random_weight(env.gen, c_out, c_in)
    await env.load(w)
    first: list[int] = []
    last: list[int] = []
    env.mon.add_callback(lambda c: first.append(env.loop.cycle))
    env.sink.add_callback(lambda b: last.append(env.loop.cycle))
    for density in (0.0, 0.05, 0.3):
        x = spikes(env.gen, 12, c_in, density)
        first.clear()
        last.clear()
        busy0 = env.model.busy_cycles
        env.config(c_in, c_out)
        pcs = env.tokens(x, compact=False)
        st = await env.check(f"back to back, density {density}")
        busy = env.model.busy_cycles - busy0
        assert busy == spike_accum_cycles(pcs, c_out, env.P)["busy"]
        took = last[-1] - first[0] + 1
        assert took == busy + LATENCY, f"first command to last beat {took} cycles, busy + LATENCY = {busy + LATENCY}"
        assert st["blocked_cycles"] == 0, st
    env.pauses(0.3, 4, 0.5, 6)                     # gaps and backpressure: busy unchanged
    env.config(c_in, c_out)
    env.tokens(spikes(env.gen, 12, c_in, 0.3), compact=True)
    await env.check("random gaps")


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_traces(dut):
    """Real spike-input Linear / 1x1-conv layers of the shipped models: accumulators == the traced ones."""
    path = os.environ.get(LAYERS_ENV)
    assert path, f"{LAYERS_ENV} not set"
    layers = torch.load(path, weights_only=False)
    env = await new_env(dut, 37)
    used = tiled = 0
    for i, layer in enumerate(layers):
        x, w, traced = layer["x"], layer["weight"], layer["acc"]
        c_out, c_in = w.shape
        if c_in > min(env.C, env.R):
            continue
        assert torch.equal(intops.linear_int8(x, w), traced), f"{layer['layer']}: golden model differs from the trace"
        env.random_pauses()
        tiles = output_tiles(c_in, c_out, env.P, env.R)
        acc = torch.cat([await env.run_layer(x, w[o0:o1], compact=i % 3 != 2) for o0, o1 in tiles], dim=1)
        assert torch.equal(acc, traced), f"{layer['model']} {layer['layer']}: accumulators differ from the trace"
        used += 1
        tiled += len(tiles) > 1
        await env.check(f"{layer['model']} {layer['layer']}")
    dut._log.info("%d of %d trace layers run (%d tiled), %d beats", used, len(layers), tiled, env.beats_checked)
    assert used > 0, "no trace layer fits this configuration"
