"""Quick Amaranth-pysim tests of the spike-accumulate engine (``rtl/spike_accum.py``).

Small configurations only (``tests/test_spike_accum_cocotb.py`` runs the large ones in Verilator).
Commands and weight rows come with random idle cycles, the output with random backpressure; every
output beat is compared with ``golden_model.intops.linear_int8`` exactly (through the command-level
reference :class:`sim.spike_accum_model.SpikeAccumModel`), the status after every command with the
reference, and the busy-cycle counter with ``golden_model.perf.spike_accum_cycles``.
"""

from __future__ import annotations

import gc
import random
import warnings

import pytest
import torch
from amaranth.back import verilog
from amaranth.hdl import Module, Mux, Signal, UnusedElaboratable
from amaranth.sim import Simulator

from driver.spike_accum import config_cmd, decode_beats, encode_tokens, token_popcounts, weight_rows
from golden_model import intops, perf
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
    SpikeAccumulator,
    acc_width,
    thermometer,
)
from sim.pysim_streams import Gaps, stream_get, stream_put
from sim.spike_accum_model import SpikeAccumModel

SMALL = {"in_max": 16, "lanes": 4, "weight_rows": 64}


def random_weight(gen: torch.Generator, c_out: int, c_in: int, extreme: float = 0.3) -> torch.Tensor:
    """int8 weights, a fraction ``extreme`` of them at -128 or 127."""
    w = torch.randint(-128, 128, (c_out, c_in), generator=gen, dtype=torch.int16)
    pick = torch.rand(c_out, c_in, generator=gen)
    w = torch.where(pick < extreme / 2, -128, torch.where(pick < extreme, 127, w))
    return w.to(torch.int8)


def random_spikes(gen: torch.Generator, n: int, c_in: int, density: float) -> torch.Tensor:
    if density <= 0:
        return torch.zeros(n, c_in, dtype=torch.int8)
    if density >= 1:
        return torch.ones(n, c_in, dtype=torch.int8)
    return (torch.rand(n, c_in, generator=gen) < density).to(torch.int8)


class Script:
    """Phases of weight loads and commands, applied to the reference as they are written.

    A phase's commands start once its weight loads are done. Its weight loads start once the
    previous phase's commands are all accepted and the engine is idle, or (``overlap=True``, double
    buffering) while the previous phase runs: then its rows must be disjoint from that phase's rows.
    A load written after commands starts a new phase.
    """

    def __init__(self, in_max: int, lanes: int, weight_rows: int):
        self.ref = SpikeAccumModel(in_max, lanes, weight_rows)
        self.params = {"in_max": in_max, "lanes": lanes, "weight_rows": weight_rows}
        self.phases: list[dict] = []
        self.beats: list[tuple[dict, str]] = []
        self.phase()

    def phase(self, overlap: bool = False) -> None:
        self.phases.append({"loads": [], "cmds": [], "overlap": overlap})

    def load(self, beat: dict) -> None:
        if self.phases[-1]["cmds"]:  # loads after commands: a new phase (waits for the engine to be idle)
            self.phase()
        self.ref.wload(beat)
        self.phases[-1]["loads"].append((beat, self.ref.status()))

    def cmd(self, c: dict) -> list[dict]:
        beats = self.ref.command(c)
        self.beats += beats
        self.phases[-1]["cmds"].append((c, self.ref.status()))
        return [b for b, _ in beats]

    def layer(self, weight: torch.Tensor, base: int = 0) -> None:
        for row in weight_rows(weight, self.ref.P, base):
            self.load(row)

    def config(self, c_in: int, c_out: int, base: int = 0) -> None:
        self.cmd(config_cmd(c_in, c_out, self.ref.P, base))

    def tokens(self, x: torch.Tensor, weight: torch.Tensor, *, compact: bool) -> None:
        """TOKEN commands of ``x`` (config already sent); the decoded beats must equal linear_int8."""
        cmds = encode_tokens(x, compact=compact)
        beats = [b for c in cmds for b in self.cmd(c)]
        acc = decode_beats(beats, x.shape[0], weight.shape[0], self.ref.P)
        assert torch.equal(acc, intops.linear_int8(x, weight))  # intops.linear_int8, end to end through the driver


def run(script: Script, *, seed: int, gap: float, backpressure: float, wgap: float | None = None,
        check_status: bool = True, queue_depth: int = 2) -> dict:
    """Simulate ``script``; check every beat, the status after every command / load phase, the counters."""
    eng = SpikeAccumulator(**script.params, queue_depth=queue_depth)
    ref = script.ref
    top = Module()
    top.submodules.eng = eng
    cycles = Signal(32)  # cycles since the counters were cleared, sampled together with them
    top.d.sync += cycles.eq(Mux(eng.counters_clear, 0, cycles + 1))
    sim = Simulator(top)
    sim.add_clock(1e-8)
    res: dict = {"loads_done": 0, "cmds_done": 0, "received": 0}
    phases, expected = script.phases, script.beats

    async def engine_idle(ctx):
        while ctx.get(eng.status.busy):
            await ctx.tick()

    async def cmd_producer(ctx):
        ctx.set(eng.counters_clear, 1)
        await ctx.tick()
        ctx.set(eng.counters_clear, 0)
        res["cleared"] = True
        gaps = Gaps(gap, 4, seed)
        n = 0
        for k, ph in enumerate(phases):
            while res["loads_done"] <= k:
                await ctx.tick()
            for cmd, status in ph["cmds"]:
                await stream_put(ctx, eng.cmd, cmd, gaps)
                if n == 0:
                    res["first_cmd"] = ctx.get(cycles)
                n += 1
                if check_status:
                    got = (ctx.get(eng.status.error), ctx.get(eng.status.error_code))
                    assert got == status, f"phase {k} command {cmd}: status {got}, expected {status}"
            res["cmds_done"] = k + 1

    async def wload_producer(ctx):
        gaps = Gaps(gap if wgap is None else wgap, 3, seed + 2)
        while not res.get("cleared"):
            await ctx.tick()
        for k, ph in enumerate(phases):
            behind = k - 1 if ph["overlap"] else k   # phases whose commands must be done first
            while res["cmds_done"] < behind:
                await ctx.tick()
            if behind > 0:
                await engine_idle(ctx)
            for beat, status in ph["loads"]:
                await stream_put(ctx, eng.wload, beat, gaps)
                if check_status and not ph["overlap"]:
                    got = (ctx.get(eng.status.error), ctx.get(eng.status.error_code))
                    assert got == status, f"phase {k} load {beat['addr']}: status {got}, expected {status}"
            res["loads_done"] = k + 1

    async def consumer(ctx):
        gaps = Gaps(backpressure, 5, seed + 1)
        for n, (want, what) in enumerate(expected):
            beat = await stream_get(ctx, eng.out, gaps)
            got = {"data": [int(v) for v in beat.data], "group": int(beat.group), "last": int(beat.last),
                   "skip": int(beat.skip)}
            assert got == want, f"beat {n} ({what}): got {got}, expected {want}"
            res["received"] = n + 1
            res["last_beat"] = ctx.get(cycles)
        while res["cmds_done"] < len(phases) or res["loads_done"] < len(phases) or ctx.get(eng.status.busy):
            await ctx.tick()
        for _ in range(4):
            await ctx.tick()
            assert not ctx.get(eng.out.valid), "unexpected extra output beat"
        res["elapsed"] = ctx.get(cycles)
        for name in ("busy_cycles", "starved_cycles", "blocked_cycles", "spikes", "acc_ops", "error", "error_code"):
            res[name] = ctx.get(getattr(eng.status, name))
        res["done"] = True

    sim.add_testbench(cmd_producer)
    sim.add_testbench(wload_producer)
    sim.add_testbench(consumer)
    sim.run()
    assert res.get("done")
    got = {k: res[k] for k in ("busy_cycles", "spikes", "acc_ops")}
    assert got == {"busy_cycles": ref.busy_cycles, "spikes": ref.spikes, "acc_ops": ref.acc_ops}, got
    assert (res["error"], res["error_code"]) == ref.status()
    assert res["busy_cycles"] + res["starved_cycles"] + res["blocked_cycles"] == res["elapsed"]
    if backpressure == 0:
        assert res["blocked_cycles"] == 0
    return res


# --------------------------------------------------------------------------------------------
# Exact results
# --------------------------------------------------------------------------------------------


def test_thermometer_logic():
    """``thermometer(n, width)`` (the c_in mask) sets exactly the bits below ``n``, for every 11-bit n."""
    n = Signal(11)
    outs = {w: Signal(w) for w in (1, 5, 16, 64)}
    m = Module()
    m.d.comb += [o.eq(thermometer(n, w)) for w, o in outs.items()]
    sim = Simulator(m)

    async def tb(ctx):
        for v in list(range(130)) + [255, 256, 1023, 1024, 2047]:
            ctx.set(n, v)
            for w, o in outs.items():
                assert ctx.get(o) == (1 << min(v, w)) - 1, (v, w)

    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("queue_depth", [2, 1, 0])
def test_densities_exact(queue_depth):
    """c_out not a multiple of P (partial last group), densities 0 / 0.1 / 0.5 / 1, both encodings."""
    gen = torch.Generator().manual_seed(1)
    s = Script(**SMALL)
    c_in, c_out = 16, 10                                   # G = 3, 48 rows
    w = random_weight(gen, c_out, c_in)
    s.layer(w)
    s.config(c_in, c_out)
    popcounts = []
    for i, density in enumerate((0.0, 0.1, 0.5, 1.0, 0.1)):
        x = random_spikes(gen, 6, c_in, density)
        s.tokens(x, w, compact=bool(i % 2))
        popcounts += token_popcounts(encode_tokens(x, compact=bool(i % 2)))
    model = perf.spike_accum_cycles(popcounts, c_out, SMALL["lanes"])
    assert s.ref.busy_cycles == model["busy"] and s.ref.acc_ops == model["acc_ops"]
    run(s, seed=1, gap=0.3, backpressure=0.4, queue_depth=queue_depth)


def test_extreme_weights_reach_the_width():
    """All inputs active with W = -128 / 127 everywhere: |acc| = 128 * C_IN_MAX, the top of acc_w."""
    s = Script(**SMALL)
    c = SMALL["in_max"]
    ones = torch.ones(2, c, dtype=torch.int8)
    for val in (-128, 127):
        w = torch.full((5, c), val, dtype=torch.int8)
        w[4, ::2] = -val - 1                                 # one output with mixed signs
        s.layer(w, base=8)
        s.config(c, 5, base=8)
        s.tokens(ones, w, compact=False)
    aw = acc_width(c)
    assert (s.ref.acc_min, s.ref.acc_max) == (-128 * c, 127 * c) and s.ref.acc_min == -(1 << (aw - 1))
    run(s, seed=2, gap=0.2, backpressure=0.5)


def test_tiling_and_double_buffering():
    """Two layers resident at different bases; layer B loaded while layer A runs; A re-used, then reloaded."""
    gen = torch.Generator().manual_seed(3)
    s = Script(**SMALL)
    wa, wb = random_weight(gen, 10, 16), random_weight(gen, 4, 11)   # A: 48 rows at 0; B: 11 rows at 53..63
    base_b = SMALL["weight_rows"] - 11                                # B ends exactly at the last row
    xa, xb = random_spikes(gen, 8, 16, 0.3), random_spikes(gen, 8, 11, 0.5)
    s.layer(wa, 0)
    s.config(16, 10, 0)
    s.tokens(xa, wa, compact=True)
    s.phase(overlap=True)                                             # B's rows while A runs
    s.layer(wb, base_b)
    s.config(11, 4, base_b)
    s.tokens(xb, wb, compact=False)
    s.config(16, 10, 0)                                               # A again: still resident
    s.tokens(xa[:4], wa, compact=False)
    s.phase()                                                         # A reloaded (engine idle)
    wa2 = random_weight(gen, 10, 16)
    s.layer(wa2, 0)
    s.config(16, 10, 0)
    s.tokens(xa, wa2, compact=True)
    s.config(11, 4, base_b)
    s.tokens(xb[4:], wb, compact=True)
    run(s, seed=3, gap=0.3, backpressure=0.3, wgap=0.5)


@pytest.mark.parametrize("params", [{"in_max": 5, "lanes": 3, "weight_rows": 7}, {"in_max": 1, "lanes": 1,
                                                                                  "weight_rows": 1}])
def test_odd_sizes(params):
    """Non-power-of-two C_IN_MAX / P / rows, and the degenerate 1 / 1 / 1 engine (0-bit group field)."""
    gen = torch.Generator().manual_seed(4)
    s = Script(**params)
    c, p, r = params["in_max"], params["lanes"], params["weight_rows"]
    for c_in in sorted({1, c}):
        c_out = p * (r // c_in) if c_in * 2 <= r else p             # G = rows // c_in (all rows) or 1
        c_out = max(1, c_out - 1) if p > 1 else c_out
        w = random_weight(gen, c_out, c_in)
        s.layer(w)
        s.config(c_in, c_out)
        for density in (0.0, 0.5, 1.0):
            s.tokens(random_spikes(gen, 3, c_in, density), w, compact=False)
    run(s, seed=4, gap=0.3, backpressure=0.4)


def test_output_bound_backpressure():
    """One beat per cycle or two (G = 1, empty / one-spike tokens) into a sink that is mostly not ready."""
    gen = torch.Generator().manual_seed(8)
    s = Script(**SMALL)
    w = random_weight(gen, 4, 16)
    x = random_spikes(gen, 40, 16, 1 / 16)
    x[::2] = 0
    s.layer(w, 20)
    s.config(16, 4, 20)
    s.tokens(x, w, compact=False)
    res = run(s, seed=8, gap=0.0, backpressure=0.8)
    assert res["blocked_cycles"] > 0


@pytest.mark.parametrize("queue_depth", [2, 1, 0])
def test_random_command_mix(queue_depth):
    """A random mix of valid / invalid CONFIGs, tokens, STATUS_CLEARs, reserved ops and weight reloads."""
    rng = random.Random(9)
    gen = torch.Generator().manual_seed(9)
    s = Script(**SMALL)
    C, P, R = SMALL["in_max"], SMALL["lanes"], SMALL["weight_rows"]
    layers = []
    for _ in range(150):
        r = rng.random()
        if r < 0.08 or not layers:                           # (re)load a layer while idle
            c_in = rng.randint(1, C)
            g = rng.randint(1, max(1, min(4, R // c_in)))
            base = rng.randint(0, R - c_in * g)
            w = random_weight(gen, rng.randint((g - 1) * P + 1, g * P), c_in)
            layers = [lay for lay in layers if lay[2] + lay[0] * lay[1] <= base or base + c_in * g <= lay[2]]
            layers.append((c_in, g, base, w))
            s.layer(w, base)
            if rng.random() < 0.2:
                s.load({"addr": rng.randint(R, 0xFFFF), "data": [0] * P})
        elif r < 0.30:
            c_in, g, base, _ = rng.choice(layers)
            s.cmd({"op": OP_CONFIG, "c_in": c_in, "groups": g, "base": base})
        elif r < 0.36:
            s.cmd({"op": OP_CONFIG, "c_in": rng.choice([0, C + 1, rng.randint(1, C)]),
                   "groups": rng.choice([0, 1, R + 1, rng.randint(1, 8)]), "base": rng.randint(0, R + 2)})
        elif r < 0.40:
            s.cmd({"op": rng.choice([OP_STATUS_CLEAR, 2])})
        else:
            for _ in range(rng.randint(1, 4)):
                c_in = s.ref.c_in if s.ref.state == "open" and rng.random() < 0.9 else C
                s.cmd({"op": OP_TOKEN, "x": rng.getrandbits(c_in) & rng.getrandbits(c_in), "skip": rng.getrandbits(16)})
    assert len(s.beats) > 100 and s.ref.busy_cycles > 500 and s.ref.error
    run(s, seed=9, gap=0.3, backpressure=0.5, queue_depth=queue_depth)


def test_cmd_ready_does_not_depend_on_out_ready():
    """In every cycle of a stalled run, cmd.ready reads the same with out.ready = 0 and = 1 (no comb path)."""
    eng = SpikeAccumulator(**SMALL)
    sim = Simulator(eng)
    sim.add_clock(1e-8)
    rng = random.Random(10)
    w = weight_rows(random_weight(torch.Generator().manual_seed(10), 8, 16), SMALL["lanes"])
    seen = {"stalled": 0, "ready": 0}

    async def tb(ctx):
        for row in w:
            await stream_put(ctx, eng.wload, row)
        cmds = [config_cmd(16, 8, SMALL["lanes"])] + [{"op": OP_TOKEN, "x": rng.getrandbits(16) & rng.getrandbits(16)}
                                                      for _ in range(40)]
        for _ in range(600):
            ctx.set(eng.cmd.valid, bool(cmds))
            if cmds:
                ctx.set(eng.cmd.payload, cmds[0])
            ctx.set(eng.out.ready, 0)
            r0 = ctx.get(eng.cmd.ready)
            ctx.set(eng.out.ready, 1)
            r1 = ctx.get(eng.cmd.ready)
            assert r0 == r1, "cmd.ready depends combinationally on out.ready"
            ready = rng.random() < 0.3
            ctx.set(eng.out.ready, ready)
            seen["stalled"] += ctx.get(eng.out.valid) and not ready and not r0
            seen["ready"] += r0
            if cmds and r0:
                cmds.pop(0)
            await ctx.tick()

    sim.add_testbench(tb)
    sim.run()
    assert seen["stalled"] > 20 and seen["ready"] > 20, seen


# --------------------------------------------------------------------------------------------
# Cycle model
# --------------------------------------------------------------------------------------------


def test_cycles_match_model_without_gaps():
    """Back to back, ready sink: busy = perf model, no stall, first command to last beat = busy + LATENCY."""
    gen = torch.Generator().manual_seed(5)
    s = Script(**SMALL)
    c_in, c_out = 13, 9                                       # G = 3
    w = random_weight(gen, c_out, c_in)
    x = random_spikes(gen, 10, c_in, 0.3)
    x[3] = 0
    s.layer(w)
    s.config(c_in, c_out)
    s.tokens(x, w, compact=False)
    res = run(s, seed=5, gap=0.0, backpressure=0.0)
    model = perf.spike_accum_cycles((x != 0).sum(dim=1).tolist(), c_out, SMALL["lanes"])
    assert res["busy_cycles"] == model["busy"] == s.ref.busy_cycles
    assert res["spikes"] == model["spikes"] and res["acc_ops"] == model["acc_ops"]
    assert len(s.beats) == model["out_beats"]
    assert res["blocked_cycles"] == 0
    assert res["last_beat"] - res["first_cmd"] + 1 == model["busy"] + LATENCY


def test_linear_int8_matches_an_explicit_sum():
    """The reference intops.linear_int8 (c_in = 1 included: torch._int_mm is wrong there) vs an int64 sum."""
    gen = torch.Generator().manual_seed(7)
    for c_in, c_out in ((1, 1), (1, 7), (1, 33), (2, 5), (16, 10)):
        x, w = random_spikes(gen, 5, c_in, 0.5), random_weight(gen, c_out, c_in)
        want = (x.to(torch.int64).unsqueeze(1) * w.to(torch.int64)).sum(-1).to(torch.int32)
        assert torch.equal(intops.linear_int8(x, w), want), (c_in, c_out)
        if c_in > 1:
            assert torch.equal(intops.linear_int8(x, w), want)


def test_perf_formula():
    m = perf.spike_accum_cycles([0, 3, 1], c_out=10, lanes=4)  # G = 3
    assert m == {"busy": 1 + 3 + 9 + 3, "spikes": 4, "acc_ops": 4 * 3 * 4, "out_beats": 9, "groups": 3}
    assert perf.spike_accum_cycles([], 1, 1, config=False)["busy"] == 0
    with pytest.raises(ValueError):
        perf.spike_accum_cycles([1], 0, 4)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_errors_and_recovery():
    """Every error code: status set, the command dropped, later tokens dropped, exact after recovery."""
    gen = torch.Generator().manual_seed(6)
    s = Script(**SMALL)
    c_in, c_out = 12, 6                                       # G = 2, 24 rows
    w = random_weight(gen, c_out, c_in)
    x = random_spikes(gen, 3, c_in, 0.5)
    s.layer(w, 4)
    tok = {"op": OP_TOKEN, "x": 0b101, "skip": 2}

    def good():
        s.config(c_in, c_out, 4)
        s.tokens(x, w, compact=False)
        assert s.ref.error == 0

    def expect(code):
        assert s.ref.error_code == code, (s.ref.error_code, code)
        s.cmd(tok)                                            # dropped silently (or error 3 after a clear)

    s.cmd(tok)                                                # TOKEN before any CONFIG
    expect(ERR_NO_CONFIG)
    good()
    for c, code in (({"c_in": 0, "groups": 2}, ERR_DIM), ({"c_in": 17, "groups": 2}, ERR_DIM),
                    ({"c_in": 2047, "groups": 65535, "base": 65535}, ERR_DIM), ({"c_in": 4, "groups": 0}, ERR_DIM),
                    ({"c_in": 12, "groups": 5, "base": 5}, ERR_ROWS), ({"c_in": 16, "groups": 4, "base": 1}, ERR_ROWS),
                    ({"c_in": 1, "groups": 1, "base": 64}, ERR_ROWS),
                    ({"c_in": 16, "groups": 65535, "base": 65535}, ERR_ROWS),
                    # operands whose low 7 bits (R = 64 is checked on 7-bit clamped operands) would pass
                    ({"c_in": 1, "groups": 1, "base": 128}, ERR_ROWS), ({"c_in": 1, "groups": 129}, ERR_ROWS),
                    ({"c_in": 3, "groups": 43, "base": 0}, ERR_ROWS)):
        s.cmd({"op": OP_CONFIG, **c})
        expect(code)
        good()
    s.cmd({"op": OP_CONFIG, "c_in": 16, "groups": 4, "base": 0})  # exactly all 64 rows: valid
    assert s.ref.error == 0
    s.config(c_in, c_out, 4)
    s.cmd({"op": OP_TOKEN, "x": 1 << c_in})                    # x bit at c_in
    expect(ERR_BITS)
    good()
    s.cmd({"op": 2})                                          # reserved op
    expect(ERR_OP)
    s.cmd({"op": OP_CONFIG, "c_in": 0, "groups": 1})         # an invalid CONFIG after an error overwrites
    assert s.ref.error_code == ERR_DIM
    s.cmd({"op": OP_STATUS_CLEAR})                           # clears and closes the layer
    assert s.ref.status() == (0, ERR_NONE)
    s.cmd(tok)
    expect(ERR_NO_CONFIG)
    s.cmd({"op": OP_STATUS_CLEAR})
    good()
    # weight-address error: row dropped, sticky across a valid CONFIG (code 5), tokens still processed
    s.phase()
    s.load({"addr": 64, "data": [1, 2, 3, 4]})
    s.load({"addr": 65535, "data": [-128, 127, 0, 0]})
    s.config(c_in, c_out, 4)
    assert s.ref.status() == (1, ERR_WADDR)
    s.tokens(x, w, compact=True)
    s.cmd({"op": OP_TOKEN, "x": 1 << 15})                    # a command error on top: code 4, then CONFIG: 5
    assert s.ref.status() == (1, ERR_BITS)
    s.config(c_in, c_out, 4)
    assert s.ref.status() == (1, ERR_WADDR)
    s.cmd({"op": OP_STATUS_CLEAR})
    good()
    run(s, seed=6, gap=0.3, backpressure=0.4)


# --------------------------------------------------------------------------------------------
# Parameters and conversion
# --------------------------------------------------------------------------------------------


def test_acc_width_and_parameters():
    assert [acc_width(c) for c in (1, 2, 16, 100, 256, 1024)] == [8, 9, 12, 15, 16, 18]
    for c in (1, 3, 16, 100, 256, 1000, 1024):
        w = acc_width(c)
        assert -(1 << (w - 1)) <= -128 * c and 127 * c <= (1 << (w - 1)) - 1
        assert not (-(1 << (w - 2)) <= -128 * c and 127 * c <= (1 << (w - 2)) - 1)  # one bit less fails
    with warnings.catch_warnings():                      # components made only to read their widths
        warnings.simplefilter("ignore", UnusedElaboratable)
        assert SpikeAccumulator(in_max=16, lanes=4, weight_rows=64).acc_w == 12
        assert SpikeAccumulator(in_max=16, lanes=4, weight_rows=64, acc_w=32).acc_w == 32
        for bad in ({"in_max": 0}, {"in_max": 1025}, {"lanes": 0}, {"weight_rows": 0}, {"weight_rows": 65537},
                    {"in_max": 16, "acc_w": 11}, {"acc_w": 33}, {"queue_depth": -1}, {"queue_depth": 3}):
            with pytest.raises(ValueError):
                SpikeAccumulator(**bad)
        gc.collect()


def test_converts_to_verilog():
    text = verilog.convert(SpikeAccumulator(in_max=24, lanes=4, weight_rows=100), name="spike_accum")
    for port in ("cmd__payload", "wload__payload", "out__payload", "status__busy_cycles", "counters_clear"):
        assert port in text
