"""Quick Amaranth-pysim tests of the RTL engines against ``golden_model.intops`` and ``golden_model.perf``.

Small configurations only (the Verilator/cocotb tests run the large ones). Every stream has random
idle cycles on the producer side and random backpressure on the consumer side; every output beat is
compared with the golden model exactly, and the busy-cycle counter with the closed-form cycle model.
"""

from __future__ import annotations

import random

import pytest
import torch
from amaranth.back import verilog
from amaranth.hdl import Module, Mux, Signal
from amaranth.sim import Simulator

from driver.attention import decode_readout, encode_window
from golden_model import intops, perf
from rtl.attention import (
    ERR_BITS,
    ERR_COUNT,
    ERR_DIM,
    ERR_HEAD,
    ERR_NO_WINDOW,
    LATENCY,
    OP_CONFIG,
    OP_KV,
    OP_Q,
    OP_STATUS_CLEAR,
    AttentionEngine,
)
from rtl.requant_lif import RequantLIF
from sim.attention_model import EngineModel, port_wait_cycles
from sim.pysim_streams import Gaps, stream_get, stream_put

MODES = ("dot", "hamming")

# --------------------------------------------------------------------------------------------
# Attention engine: a reference of the command protocol (windows, errors, costs)
# --------------------------------------------------------------------------------------------


def bits_to_int(row) -> int:
    return sum(1 << i for i, b in enumerate(row) if b)


def int_to_bits(x: int, n: int) -> list[int]:
    return [(x >> i) & 1 for i in range(n)]


class EngineRef:
    """Builds command dicts and applies them to the shared reference model (sim.attention_model)."""

    def __init__(self, dim_max: int, lanes: int, max_tokens: int, heads: int):
        self.model = EngineModel(dim_max, lanes, max_tokens, heads)
        self.beats: list[dict] = []

    def _do(self, cmd: dict) -> dict:
        self.beats += [beat for beat, _ in self.model.command(cmd)]
        return cmd

    error = property(lambda self: self.model.error)
    code = property(lambda self: self.model.error_code)
    busy = property(lambda self: self.model.busy_cycles)
    spikes = property(lambda self: self.model.spikes)
    acc_ops = property(lambda self: self.model.acc_ops)

    def config(self, head: int, dim: int, tokens: int, mode: str) -> dict:
        return self._do({"op": OP_CONFIG, "head": head, "dim": dim, "tokens": tokens, "mode": MODES.index(mode)})

    def kv(self, k: int, v: int) -> dict:
        return self._do({"op": OP_KV, "a": k, "b": v})

    def v_pair(self, v0: int, v1: int) -> dict:
        return self._do({"op": OP_KV, "mode": 1, "a": v0, "b": v1})

    def q(self, q: int, skip: int = 0) -> dict:
        return self._do({"op": OP_Q, "a": q, "skip": skip})

    def const_request(self) -> dict:
        return self._do({"op": OP_Q, "mode": 1})

    def status_clear(self) -> dict:
        return self._do({"op": OP_STATUS_CLEAR})


def random_spikes(rng: random.Random, n: int, dim: int, density: float) -> list[int]:
    return [bits_to_int([rng.random() < density for _ in range(dim)]) for _ in range(n)]


def add_window(ref: EngineRef, cmds: list, rng: random.Random, *, dim: int, tokens: int, n_q: int, mode: str,
               density: float, head: int = 0, ones: bool = False) -> None:
    """CONFIG + ``tokens`` KV tokens + ``n_q`` Q tokens; each command is paired with the expected status."""
    cmds.append((ref.config(head, dim, tokens, mode), (ref.error, ref.code)))
    full = (1 << dim) - 1
    ks = [full] * tokens if ones else random_spikes(rng, tokens, dim, density)
    vs = [full] * tokens if ones else random_spikes(rng, tokens, dim, density)
    for k, v in zip(ks, vs, strict=True):
        cmds.append((ref.kv(k, v), (ref.error, ref.code)))
    for q in ([full] * n_q if ones else random_spikes(rng, n_q, dim, density)):
        cmds.append((ref.q(q), (ref.error, ref.code)))


def run_engine(eng: AttentionEngine, ref: EngineRef, cmds: list, *, seed: int, gap: float, backpressure: float,
               check_status: bool = True) -> dict:
    """Drive ``cmds`` into ``eng`` with random gaps/backpressure; check every beat, status and counters."""
    top = Module()
    top.submodules.eng = eng
    cycles = Signal(32)  # cycles since the counters were cleared, sampled together with them
    top.d.sync += cycles.eq(Mux(eng.counters_clear, 0, cycles + 1))
    sim = Simulator(top)
    sim.add_clock(1e-8)
    result: dict = {"done": False}
    expected = list(ref.beats)

    async def producer(ctx):
        ctx.set(eng.counters_clear, 1)
        await ctx.tick()
        ctx.set(eng.counters_clear, 0)
        gaps = Gaps(gap, 4, seed)
        status = (eng.status.error, eng.status.error_code)
        for n, (cmd, (err, code)) in enumerate(cmds):
            # a CONFIG is applied in the first non-stalled cycle after its transfer, and the engine takes
            # no command before that: its status is the one at the next command's transfer edge
            after_cfg = n > 0 and cmds[n - 1][0]["op"] == OP_CONFIG
            idle = gaps()
            if idle:
                ctx.set(eng.cmd.valid, 0)
                await ctx.tick().repeat(idle)
            ctx.set(eng.cmd.payload, cmd)
            ctx.set(eng.cmd.valid, 1)
            before = await ctx.tick().sample(*status).until(eng.cmd.ready)
            ctx.set(eng.cmd.valid, 0)
            if n == 0:
                result["first_cmd"] = ctx.get(cycles)
            if check_status and after_cfg:
                assert tuple(before) == cmds[n - 1][1], f"CONFIG {n - 1}: status {before}, expected {cmds[n - 1][1]}"
            if check_status and cmd["op"] != OP_CONFIG:
                got = (ctx.get(eng.status.error), ctx.get(eng.status.error_code))
                assert got == (err, code), f"command {n} {cmd}: status {got}, expected {(err, code)}"
        if check_status and cmds and cmds[-1][0]["op"] == OP_CONFIG:
            while ctx.get(eng.status.busy):
                await ctx.tick()
            got = (ctx.get(eng.status.error), ctx.get(eng.status.error_code))
            assert got == cmds[-1][1], f"the last CONFIG: status {got}, expected {cmds[-1][1]}"
        result["sent"] = True

    async def consumer(ctx):
        gaps = Gaps(backpressure, 5, seed + 1)
        for n, want in enumerate(expected):
            beat = await stream_get(ctx, eng.out, gaps)
            got = {"data": [int(x) for x in beat.data], "group": int(beat.group), "last": int(beat.last),
                   "skip": int(beat.skip), "const": int(beat.const), "head": int(beat.head)}
            assert got == want, f"beat {n}: got {got}, expected {want}"
            result["last_beat"] = ctx.get(cycles)
        # drain: no extra beat, engine idle
        for _ in range(4):
            await ctx.tick()
        while not result.get("sent") or ctx.get(eng.status.busy):
            await ctx.tick()
        assert not ctx.get(eng.out.valid), "unexpected extra output beat"
        result["done"] = True
        result["elapsed"] = ctx.get(cycles)
        for name in ("busy_cycles", "starved_cycles", "blocked_cycles", "spikes", "acc_ops"):
            result[name] = ctx.get(getattr(eng.status, name))

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert result["done"]
    assert result["busy_cycles"] == ref.busy, (result["busy_cycles"], ref.busy)
    assert result["spikes"] == ref.spikes
    assert result["acc_ops"] == ref.acc_ops
    assert result["busy_cycles"] + result["starved_cycles"] + result["blocked_cycles"] == result["elapsed"]
    if backpressure == 0:
        assert result["blocked_cycles"] == 0
    return result


ENGINE_CONFIGS = [
    # (dim_max, lanes, max_tokens, heads)
    (8, 8, 64, 1),
    (16, 4, 64, 2),
    (16, 16, 64, 1),
]


@pytest.mark.parametrize("dim_max,lanes,max_tokens,heads", ENGINE_CONFIGS)
def test_attention_exact(dim_max, lanes, max_tokens, heads):
    seed = dim_max * 1000 + lanes
    rng = random.Random(seed)
    ref = EngineRef(dim_max, lanes, max_tokens, heads)
    cmds: list = []
    windows = []
    for mode in MODES:
        for density in (0.0, 0.1, 0.5, 1.0):
            dim = dim_max if density in (0.0, 0.5) else rng.randint(1, dim_max - 1)
            windows.append(dict(dim=dim, tokens=rng.randint(1, 5), n_q=rng.randint(1, 3), mode=mode,
                                density=density, head=rng.randrange(heads)))
    for mode in MODES:  # read-out heavy: the output stream (backpressure) is the bottleneck
        windows.append(dict(dim=dim_max - 1, tokens=3, n_q=12, mode=mode, density=0.1, head=heads - 1))
    for w in windows:
        add_window(ref, cmds, rng, **w)
    # one dense window at the widest counters (KV = N_MAX, |o| = D_MAX * N_MAX) in each mode
    if lanes == dim_max:
        for mode in MODES:
            add_window(ref, cmds, rng, dim=dim_max, tokens=max_tokens, n_q=1, mode=mode, density=1.0, ones=True)
    assert ref.beats
    run_engine(AttentionEngine(dim_max=dim_max, lanes=lanes, max_tokens=max_tokens, heads=heads), ref, cmds,
               seed=seed, gap=0.3, backpressure=0.4)


@pytest.mark.parametrize("dim_max,lanes", [(8, 8), (16, 4)])
def test_attention_compact(dim_max, lanes):
    """Compacted windows (driver.attention.encode_window): beats == model, decoded == intops.attention."""
    rng = random.Random(dim_max + lanes)
    gen = torch.Generator().manual_seed(dim_max)
    ref = EngineRef(dim_max, lanes, 64, 1)
    cmds: list = []
    checks = []
    for mode in MODES:
        for density in (0.0, 0.05, 0.3, 1.0):
            dim = rng.choice([dim_max, rng.randint(1, dim_max)])
            n, m = rng.randint(1, 9), rng.randint(1, 9)
            k, q = ((torch.rand(r, dim, generator=gen) < density).to(torch.int8) for r in (n, m))
            v = (torch.rand(n, dim, generator=gen) < 0.5).to(torch.int8)
            start = len(ref.beats)
            for c in encode_window(k, v, q, mode, compact=True):
                cmds.append((ref._do(c), (ref.error, ref.code)))
            checks.append((ref.beats[start:], q, k, v, mode, dim))
    for beats, q, k, v, mode, dim in checks:
        got = decode_readout(beats, q.shape[0], dim, lanes, mode)
        assert torch.equal(got, intops.attention(q, k, v, mode)), (mode, dim)
    run_engine(AttentionEngine(dim_max=dim_max, lanes=lanes, max_tokens=64), ref, cmds, seed=dim_max, gap=0.3,
               backpressure=0.4)


def test_attention_cycles_match_model_without_gaps():
    """Back to back commands, always-ready sink: busy = model, no stall, elapsed = busy + port waits + latency."""
    d, p = 16, 4
    rng = random.Random(7)
    ref = EngineRef(d, p, 64, 1)
    cmds: list = []
    k = random_spikes(rng, 9, 11, 0.3)
    v = random_spikes(rng, 9, 11, 0.5)
    q = random_spikes(rng, 4, 11, 0.3) + [0]
    cmds.append((ref.config(0, 11, 9, "hamming"), (0, 0)))
    cmds += [(ref.kv(a, b), (0, 0)) for a, b in zip(k, v, strict=True)]
    cmds += [(ref.q(x), (0, 0)) for x in q]
    res = run_engine(AttentionEngine(dim_max=d, lanes=p, max_tokens=64), ref, cmds, seed=3, gap=0.0, backpressure=0.0)
    bits = lambda xs: torch.tensor([int_to_bits(x, 11) for x in xs], dtype=torch.int8)  # noqa: E731
    model = perf.attention_cycles(bits(k), bits(v), bits(q), dim=11, lanes=p, mode="hamming")
    assert res["busy_cycles"] == model["busy"] == ref.busy
    assert res["acc_ops"] == model["acc_ops"] and res["spikes"] == model["spikes"]
    # the first command waits a cycle at the port, and so does each one after a command of one busy cycle
    wait = port_wait_cycles(ref.model.occupancy)
    assert res["first_cmd"] == 2
    assert res["blocked_cycles"] == 0
    assert res["starved_cycles"] == res["elapsed"] - res["last_beat"] + LATENCY + res["first_cmd"] - 1 + wait
    assert res["last_beat"] - res["first_cmd"] + 1 == model["busy"] + wait + LATENCY  # latency of the last beat


def test_attention_errors_and_recovery():
    d, p, n, h = 16, 4, 64, 2
    rng = random.Random(11)
    ref = EngineRef(d, p, n, h)
    cmds: list = []

    def add(cmd):
        cmds.append((cmd, (ref.error, ref.code)))

    add(ref.q(0b1))                                   # Q with no window: 4
    add(ref.kv(0b1, 0b1))                             # dropped, code stays 4
    add(ref.config(1, 10, 3, "hamming"))              # clean window, error cleared
    add(ref.q(0b11))                                  # Q before any KV: 4
    add_window(ref, cmds, rng, dim=10, tokens=3, n_q=2, mode="dot", density=0.5)   # exact again
    add(ref.config(0, 10, 3, "dot"))
    add(ref.kv(0b101, 0b11))
    add(ref.kv(0b1, 0b1))
    add(ref.q(0b1))                                   # ended early: 1
    add(ref.q(0b1))                                   # dropped
    add(ref.status_clear())
    add(ref.kv(0b1, 0b1))                             # no window after STATUS_CLEAR: 4
    add(ref.status_clear())
    for head, dim, tokens, code in ((0, 0, 3, ERR_DIM), (0, 17, 3, ERR_DIM), (0, 4, 65, ERR_DIM),
                                    (2, 4, 3, ERR_HEAD), (200, 0, 0, ERR_HEAD)):
        add(ref.config(head, dim, tokens, "dot"))
        assert ref.code == code
        add(ref.kv(0b1, 0b1))                         # dropped in the broken window
    add(ref.config(0, 10, 2, "hamming"))
    add(ref.kv(1 << 12, 0b1))                         # k bit above dim: 5
    assert ref.code == ERR_BITS
    add(ref.q(0b1))                                   # dropped
    add(ref.config(0, 10, 2, "hamming"))
    add(ref.kv(0b1, 1 << 10))                         # v bit above dim: 5
    add(ref.config(1, 10, 2, "dot"))
    add(ref.kv(0b11, 0b110))
    add(ref.kv(0b10, 0b111))
    add(ref.kv(0b10, 0b111))                          # one KV token too many: 1
    assert ref.code == ERR_COUNT
    add(ref.config(1, 10, 2, "dot"))
    add(ref.kv(0b11, 0b110))
    add(ref.kv(0b10, 0b111))
    add(ref.q(0b11))                                  # exact
    add(ref.q(1 << 10))                               # q bit above dim: 5
    add(ref.q(0b11))                                  # dropped
    add(ref.config(0, 10, 2, "hamming"))
    add(ref.kv(0b1, 0b1))
    add(ref.v_pair(0b1, 0b11))                        # a V pair past the window's tokens: 1
    assert ref.code == ERR_COUNT
    add(ref.config(0, 10, 3, "hamming"))
    add(ref.v_pair(0b1, 1 << 11))                     # a V pair's v beyond dim: 5
    assert ref.code == ERR_BITS
    add(ref.config(0, 10, 3, "dot"))
    add(ref.const_request())                          # constant request before the KV tokens: 4
    assert ref.code == ERR_NO_WINDOW
    add_window(ref, cmds, rng, dim=16, tokens=4, n_q=2, mode="hamming", density=0.5, head=1)  # recovery
    assert ref.error == 0
    run_engine(AttentionEngine(dim_max=d, lanes=p, max_tokens=n, heads=h), ref, cmds, seed=5, gap=0.3,
               backpressure=0.5)


def test_perf_model_formula():
    k = torch.tensor([[1, 1, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.int8)
    q = torch.tensor([[0, 0, 0, 0, 0], [1, 0, 1, 0, 0]], dtype=torch.int8)
    m = perf.attention_cycles(k, k, q, dim=5, lanes=2, mode="dot")  # G = 3
    assert m["build"] == 3 * 3 + 1 and m["readout"] == 3 * 1 + 3 * 2 and m["busy"] == 2 + 10 + 9
    assert m["spikes"] == 5 and m["acc_ops"] == 2 * 3 * 5 and m["out_beats"] == 6


@pytest.mark.parametrize("dim_max,lanes", [(8, 8), (16, 4)])
def test_attention_converts_to_verilog(dim_max, lanes):
    text = verilog.convert(AttentionEngine(dim_max=dim_max, lanes=lanes, max_tokens=64, heads=2),
                           name="attention_engine")
    for port in ("cmd__payload", "out__payload", "status__busy_cycles", "counters_clear"):
        assert port in text


def test_parallel_heads_converts_to_verilog():
    from rtl.attention_heads import ParallelHeads

    text = verilog.convert(ParallelHeads(units=2, heads=4, dim_max=8, lanes=4, max_tokens=64), name="parallel_heads")
    for port in ("cmd__payload", "out__payload", "status__0__busy_cycles", "status__1__acc_ops"):
        assert port in text


# --------------------------------------------------------------------------------------------
# Requant + LIF
# --------------------------------------------------------------------------------------------


def _lif_ref(accs, ms, ss, bs, leak, shift, theta):
    """accs: (T, neurons, C) int -> spikes (T, neurons, C) via intops.requant + lif_step."""
    acc = torch.tensor(accs, dtype=torch.int32)
    y = intops.requant(acc, torch.tensor(ms, dtype=torch.int32), torch.tensor(ss, dtype=torch.int32),
                       torch.tensor(bs, dtype=torch.int32), out_bits=16)
    v = torch.zeros_like(y[0])
    out = []
    for t in range(y.shape[0]):
        s, v = intops.lif_step(v, y[t], leak, shift, theta)
        out.append(s)
    return torch.stack(out).tolist()


INT32_LO, INT32_HI = -(1 << 31), (1 << 31) - 1


def _layer_extremes(rng, c, neurons, steps):
    """Saturation and extreme parameters: M = -32768/32767, S = 1/47, B = int32 limits, acc limits."""
    ext = lambda lo, hi: rng.choice([lo, hi, rng.randint(lo, hi)])  # noqa: E731
    leak, shift, theta = rng.choice([(1, 1, 256), (1 << 15, 15, 1), (rng.randint(1, 255), 8, 20000), (37, 6, 32767)])
    ms = [ext(-32768, 32767) for _ in range(c)]
    ss = [rng.choice([1, 47, rng.randint(1, 47), rng.randint(8, 20)]) for _ in range(c)]
    bs = [rng.choice([INT32_LO, INT32_HI, rng.randint(-40000, 40000), 0]) for _ in range(c)]
    accs = [[[rng.choice([INT32_LO, INT32_HI, rng.randint(-5000, 5000), rng.randint(INT32_LO, INT32_HI)])
              for _ in range(c)] for _ in range(neurons)] for _ in range(steps)]
    return leak, shift, theta, ms, ss, bs, accs


def _layer_rounding(rng, c, neurons, steps):
    """L = 2**K makes v' = y, so a spike says y >= theta; accs sit on the rounding boundary of
    ``acc * M / 2**S`` and B puts that boundary at theta: every spike tests the rounding and shift."""
    theta = rng.randint(1, 30000)
    shift = rng.randint(1, 15)
    ms, ss, bs, bases = [], [], [], []
    for _ in range(c):
        m = rng.choice([-32768, 32767, rng.randint(-32768, 32767) or 1])
        s = rng.choice([47, rng.randint(1, 47), rng.randint(1, 20)])
        xmax = max(0, min(1 << 30, ((1 << 31) * abs(m) >> s) - 1))
        x = rng.randint(-xmax, xmax)
        ms.append(m)
        ss.append(s)
        bs.append(theta - x - 1)
        bases.append(round((x + 0.5) * 2 ** s / m))
    accs = [[[max(INT32_LO, min(INT32_HI, bases[ch] + rng.randint(-1, 1))) for ch in range(c)]
             for _ in range(neurons)] for _ in range(steps)]
    return 1 << shift, shift, theta, ms, ss, bs, accs


def _layer_integrating(rng, c, neurons, steps):
    """Moderate inputs and a slow leak: spikes depend on the membrane carried across time steps."""
    shift = rng.randint(4, 8)
    leak = rng.randint(1, 1 << (shift - 2))
    ms = [rng.randint(100, 3000) for _ in range(c)]
    ss = [rng.randint(6, 10) for _ in range(c)]
    bs = [rng.randint(-200, 200) for _ in range(c)]
    accs = [[[rng.randint(-500, 3000) for _ in range(c)] for _ in range(neurons)] for _ in range(steps)]
    return leak, shift, rng.randint(200, 1500), ms, ss, bs, accs


def run_requant_lif(lanes, groups, neurons, layers, *, seed, gap, backpressure):
    """Program each layer's parameters, send ``steps`` time steps of every neuron, check every spike beat."""
    c = lanes * groups
    dut = RequantLIF(lanes=lanes, groups=groups, neurons=neurons)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    expected: list = []
    for li, (leak, shift, theta, ms, ss, bs, accs) in enumerate(layers):
        ref = _lif_ref(accs, ms, ss, bs, leak, shift, theta)
        for t in range(len(accs)):
            for n in range(neurons):
                for g in range(groups):
                    expected.append((li, ref[t][n][g * lanes:(g + 1) * lanes], g, n))
    received = [0]

    async def producer(ctx):
        gaps = Gaps(gap, 3, seed)
        for li, (leak, shift, theta, ms, ss, bs, accs) in enumerate(layers):
            while received[0] < sum(1 for e in expected if e[0] < li) or ctx.get(dut.busy):
                await ctx.tick()  # parameters change only while idle
            ctx.set(dut.param.we, 1)
            ctx.set(dut.param.lif, 1)
            ctx.set(dut.param.data, {"lif": {"leak": leak, "shift": shift, "theta": theta}})
            await ctx.tick()
            ctx.set(dut.param.lif, 0)
            for ch in range(c):
                ctx.set(dut.param.group, ch // lanes)
                ctx.set(dut.param.lane, ch % lanes)
                ctx.set(dut.param.data, {"chan": {"m": ms[ch], "s": ss[ch], "b": bs[ch]}})
                await ctx.tick()
            ctx.set(dut.param.we, 0)
            if li % 2:  # alternate the two ways to start from v = 0: clear sweep, or the first-step flag
                ctx.set(dut.reset_state, 1)
                await ctx.tick()
                ctx.set(dut.reset_state, 0)
            for t in range(len(accs)):
                for n in range(neurons):
                    for g in range(groups):
                        beat = {"data": accs[t][n][g * lanes:(g + 1) * lanes], "group": g, "index": n,
                                "first": int(t == 0 and li % 2 == 0)}
                        await stream_put(ctx, dut.inp, beat, gaps)

    async def consumer(ctx):
        gaps = Gaps(backpressure, 4, seed + 1)
        for li, lanes_ref, g, n in expected:
            beat = await stream_get(ctx, dut.out, gaps)
            got = ([int(beat.spikes) >> i & 1 for i in range(lanes)], int(beat.group), int(beat.index))
            assert got == (lanes_ref, g, n), f"layer {li} beat {received[0]}: got {got}, expected {(lanes_ref, g, n)}"
            received[0] += 1

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert received[0] == len(expected)
    return expected


@pytest.mark.parametrize("lanes,groups,neurons,seed,gap,backpressure",
                         [(4, 2, 3, 1, 0.3, 0.4), (3, 1, 1, 2, 0.0, 0.0), (2, 2, 1, 3, 0.2, 0.5)])
def test_requant_lif_exact(lanes, groups, neurons, seed, gap, backpressure):
    rng = random.Random(seed)
    c = lanes * groups
    layers = [make(rng, c, neurons, 6) for make in (_layer_extremes, _layer_rounding, _layer_integrating,
                                                    _layer_extremes, _layer_rounding, _layer_integrating)]
    expected = run_requant_lif(lanes, groups, neurons, layers, seed=seed, gap=gap, backpressure=backpressure)
    fired = [x for e in expected for x in e[1]]
    assert 0 < sum(fired) < len(fired)


def test_requant_lif_throughput_and_latency():
    """Back to back beats into an always-ready sink: one beat per cycle, latency as perf says."""
    lanes, beats = 2, 12
    dut = RequantLIF(lanes=lanes, groups=1, neurons=beats)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    t_in: list[int] = []
    t_out: list[int] = []

    async def tb(ctx):
        ctx.set(dut.out.ready, 1)
        t = 0
        while len(t_out) < beats:
            n = len(t_in)
            ctx.set(dut.inp.valid, n < beats)
            if n < beats:
                ctx.set(dut.inp.payload, {"data": [n, -n], "group": 0, "index": n, "first": 1})
            _, _, in_valid, in_ready, out_valid = await ctx.tick().sample(dut.inp.valid, dut.inp.ready,
                                                                          dut.out.valid)
            t += 1
            if in_valid and in_ready:
                t_in.append(t)
            if out_valid:
                t_out.append(t)
            assert t < 100

    sim.add_testbench(tb)
    sim.run()
    model = perf.requant_lif_cycles(beats)
    assert t_in == list(range(t_in[0], t_in[0] + beats))
    assert t_out[-1] - t_in[0] + 1 == model["total"]
    assert [o - i for i, o in zip(t_in, t_out, strict=True)] == [model["latency"]] * beats


def test_requant_lif_converts_to_verilog():
    text = verilog.convert(RequantLIF(lanes=4, groups=2, neurons=8), name="requant_lif")
    assert "inp__payload" in text and "param__data" in text


# --------------------------------------------------------------------------------------------
# Heads in parallel (rtl/attention_heads.py)
# --------------------------------------------------------------------------------------------


def _interleaved_windows(rng: random.Random, gen: torch.Generator, heads: list[int], dim: int, compact: bool):
    """Commands of one window per head, the heads' KV and then Q commands interleaved round robin."""
    per_head = []
    for h in heads:
        mode = rng.choice(MODES)
        k, v, q = ((torch.rand(n, dim, generator=gen) < 0.3).to(torch.int8) for n in (6, 6, 5))
        per_head.append([dict(c, head=h) for c in encode_window(k, v, q, mode, head=h, compact=compact)])
    cmds = [c[0] for c in per_head]  # the CONFIGs
    kvs = [[c for c in cs[1:] if c["op"] == OP_KV] for cs in per_head]
    qs = [[c for c in cs[1:] if c["op"] == OP_Q] for cs in per_head]
    for group in (kvs, qs):
        for i in range(max(len(x) for x in group)):
            cmds += [x[i] for x in group if i < len(x)]
    return cmds


@pytest.mark.parametrize("units,gap,backpressure", [(2, 0.0, 0.0), (4, 0.3, 0.4)])
def test_parallel_heads(units, gap, backpressure):
    """Every unit's beats equal the reference model's for its heads, in order; counters per unit exact;
    with no gaps the interleaved heads overlap (elapsed cycles < the units' busy cycles summed)."""
    from rtl.attention_heads import ParallelHeads

    d, p, n, hpu = 8, 4, 64, 2
    rng = random.Random(units)
    gen = torch.Generator().manual_seed(units)
    dut = ParallelHeads(units=units, heads=units * hpu, dim_max=d, lanes=p, max_tokens=n)
    cmds = []
    for rnd in range(3):
        heads = [u + units * rng.randrange(hpu) for u in range(units)]  # one window per unit at a time
        cmds += _interleaved_windows(rng, gen, heads, d, compact=bool(rnd % 2))
    models = [EngineModel(d, p, n, hpu) for _ in range(units)]
    expected: list[list[dict]] = [[] for _ in range(units)]
    for c in cmds:
        u = c["head"] % units
        for beat, _ in models[u].command(dict(c, head=c["head"] // units)):
            expected[u].append(dict(beat, head=beat["head"] * units + u))
    total = sum(len(e) for e in expected)
    got: list[list[dict]] = [[] for _ in range(units)]
    result = {}
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def producer(ctx):
        gaps = Gaps(gap, 3, units)
        for c in cmds:
            await stream_put(ctx, dut.cmd, c, gaps)

    async def consumer(ctx):
        gaps = Gaps(backpressure, 4, units + 1)
        for _ in range(total):
            beat = await stream_get(ctx, dut.out, gaps)
            b = {"data": [int(x) for x in beat.data], "group": int(beat.group), "last": int(beat.last),
                 "skip": int(beat.skip), "const": int(beat.const), "head": int(beat.head)}
            got[b["head"] % units].append(b)
        for _ in range(6):
            await ctx.tick()
        assert not ctx.get(dut.out.valid), "unexpected extra output beat"
        for u in range(units):
            st = dut.status[u]
            result[u] = {k: ctx.get(getattr(st, k)) for k in ("busy_cycles", "starved_cycles", "blocked_cycles",
                                                             "spikes", "acc_ops", "error")}
        result["elapsed"] = result[0]["busy_cycles"] + result[0]["starved_cycles"] + result[0]["blocked_cycles"]

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    for u in range(units):
        assert got[u] == expected[u], f"unit {u}: beats differ"
        assert result[u]["error"] == models[u].error == 0
        assert (result[u]["busy_cycles"], result[u]["spikes"], result[u]["acc_ops"]) == (
            models[u].busy_cycles, models[u].spikes, models[u].acc_ops), f"unit {u} counters"
    if gap == 0 and backpressure == 0:
        assert result["elapsed"] < sum(m.busy_cycles for m in models), "the heads did not overlap"
