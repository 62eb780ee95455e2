"""cocotb testbench of ``rtl.requant_lif.RequantLIF`` (``docs/attention_engine.md``, section 6).

* **Driver**: :class:`~sim.streams.StreamSource` on ``inp`` (random idle cycles); parameters are
  written through ``param`` while the unit is idle; the membranes start from 0 by ``first = 1`` on
  the first time step or by a ``reset_state`` sweep (alternating per layer).
* **Monitor -> reference model**: a :class:`~sim.streams.StreamMonitor` on ``inp`` hands every
  accepted beat to :class:`LIFModel`: ``intops.requant(out_bits=16)`` then ``intops.lif_step`` on
  the membrane of ``(index, channel)``.
* **Scoreboard**: every spike beat on ``out`` (:class:`~sim.streams.StreamSink`, random
  backpressure, stream-rule checks) is compared with ``==`` to the next expected beat.

Configuration (``lanes``, ``groups``, ``neurons``) from the pytest wrapper (:func:`sim.verilator.tb_params`).
"""

from __future__ import annotations

import random
from collections import deque

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from golden_model import intops
from golden_model.perf import requant_lif_cycles
from rtl.requant_lif import RequantLIF
from sim.streams import (
    ClockLoop,
    StreamMonitor,
    StreamSink,
    StreamSource,
    pack,
    payload_layout,
    random_pauses,
    value_int,
)
from sim.verilator import tb_params

PARAMS = tb_params()
INT32_LO, INT32_HI = -(1 << 31), (1 << 31) - 1
TEST_TIMEOUT_MS = 200


class LIFModel:
    """Reference: per accepted beat, requant then one LIF step on the stored membrane."""

    def __init__(self, lanes: int, groups: int, neurons: int):
        self.P, self.G, self.NN = lanes, groups, neurons
        self.v = torch.zeros(neurons, lanes * groups, dtype=torch.int32)
        self.m = self.s = self.b = None
        self.leak = self.shift = self.theta = 0

    def reset(self) -> None:
        self.v.zero_()

    def beat(self, b: dict) -> dict:
        g, n = b["group"], b["index"]
        sl = slice(g * self.P, (g + 1) * self.P)
        acc = torch.tensor(b["data"], dtype=torch.int32)
        y = intops.requant(acc, self.m[sl], self.s[sl], self.b[sl], out_bits=16)
        v = torch.zeros(self.P, dtype=torch.int32) if b["first"] else self.v[n, sl]
        s, v2 = intops.lif_step(v, y, self.leak, self.shift, self.theta)
        self.v[n, sl] = v2
        return {"spikes": sum(int(x) << i for i, x in enumerate(s.tolist())), "group": g, "index": n}


def random_layer(rng: random.Random, c: int, kind: str) -> tuple:
    """``(leak, shift, theta, M, S, B, acc_fn)``: extreme, rounding-heavy or integrating parameters."""
    if kind == "extreme":
        ext = lambda lo, hi: rng.choice([lo, hi, rng.randint(lo, hi)])  # noqa: E731
        leak, shift, theta = rng.choice([(1, 1, 256), (1 << 15, 15, 1), (rng.randint(1, 255), 8, 20000),
                                         (37, 6, 32767), (1 << 15, 15, -32768), (1, 0, 0)])
        ms = [ext(-32768, 32767) for _ in range(c)]
        ss = [rng.choice([1, 47, rng.randint(1, 47), rng.randint(8, 20)]) for _ in range(c)]
        bs = [rng.choice([INT32_LO, INT32_HI, rng.randint(-40000, 40000), 0]) for _ in range(c)]
        acc = lambda: rng.choice([INT32_LO, INT32_HI, rng.randint(-5000, 5000), rng.randint(INT32_LO, INT32_HI)])  # noqa: E731
    elif kind == "rounding":
        shift = rng.randint(0, 15)
        leak, theta = 1 << shift, rng.randint(-2000, 30000)
        ms = [rng.choice([-32768, 32767, rng.randint(-32768, 32767)]) for _ in range(c)]
        ss = [rng.randint(1, 20) for _ in range(c)]
        bs = [rng.randint(-3000, 3000) + theta for _ in range(c)]
        acc = lambda: rng.randint(-(1 << 12), 1 << 12)  # noqa: E731
    else:  # integrating: slow leak, the membrane carries across time steps
        shift = rng.randint(4, 8)
        leak, theta = rng.randint(1, 1 << (shift - 2)), rng.randint(200, 1500)
        ms = [rng.randint(100, 3000) for _ in range(c)]
        ss = [rng.randint(6, 10) for _ in range(c)]
        bs = [rng.randint(-200, 200) for _ in range(c)]
        acc = lambda: rng.randint(-500, 3000)  # noqa: E731
    return leak, shift, theta, ms, ss, bs, acc


class Env:
    def __init__(self, dut, seed: int):
        self.dut = dut
        self.rng = random.Random(seed)
        u = RequantLIF(**PARAMS)
        self.P, self.G, self.NN = PARAMS["lanes"], PARAMS["groups"], PARAMS["neurons"]
        self.in_layout, self.out_layout = payload_layout(u, "inp"), payload_layout(u, "out")
        self.param_data = u.signature.members["param"].signature.members["data"].shape
        self.model = LIFModel(self.P, self.G, self.NN)
        self.expected: deque = deque()
        self.mismatches: list[str] = []
        self.beats = 0
        self.out_spikes: list[int] = []

    async def start(self) -> Env:
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.rst.value = 1
        dut.reset_state.value = 0
        dut.param__we.value = 0
        dut.inp__valid.value = 0
        dut.out__ready.value = 0
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        self.loop = ClockLoop(dut.clk)
        self.src = StreamSource(dut, "inp", self.in_layout, self.loop)
        self.mon = StreamMonitor(dut, "inp", self.in_layout, self.loop)
        self.sink = StreamSink(dut, "out", self.out_layout, self.loop, keep=False)
        self.mon.add_callback(lambda b: self.expected.append(self.model.beat(b)))
        self.sink.add_callback(self._on_beat)
        await RisingEdge(dut.clk)
        return self

    def pauses(self, idle: float, backpressure: float) -> None:
        s = self.rng.randrange(1 << 30)
        self.src.set_pauses(random_pauses(s, idle, burst=self.rng.randint(1, 5)))
        self.sink.set_pauses(random_pauses(s + 1, backpressure, burst=self.rng.randint(1, 8)))

    def _on_beat(self, beat: dict) -> None:
        self.beats += 1
        self.out_spikes.append(beat["spikes"])
        if not self.expected:
            self.mismatches.append(f"unexpected beat {beat}")
            return
        want = self.expected.popleft()
        if beat != want:
            self.mismatches.append(f"beat #{self.beats}: got {beat}, want {want}")

    async def drain(self, limit: int = 100000) -> None:
        for _ in range(limit):
            await RisingEdge(self.dut.clk)
            if not self.src.pending() and not self.expected and not value_int(self.dut.busy):
                return
        raise AssertionError(f"stuck: {self.src.pending()} beats unsent, {len(self.expected)} missing")

    async def program(self, leak, shift, theta, ms, ss, bs) -> None:
        """Write the layer's parameters (unit idle), one write per cycle."""
        await self.drain()
        dut = self.dut
        dut.param__we.value = 1
        dut.param__lif.value = 1
        dut.param__data.value = pack(self.param_data, {"lif": {"leak": leak, "shift": shift, "theta": theta}})
        await RisingEdge(dut.clk)
        dut.param__lif.value = 0
        for ch in range(self.P * self.G):
            dut.param__group.value = ch // self.P
            dut.param__lane.value = ch % self.P
            dut.param__data.value = pack(self.param_data, {"chan": {"m": ms[ch], "s": ss[ch], "b": bs[ch]}})
            await RisingEdge(dut.clk)
        dut.param__we.value = 0
        t = lambda x: torch.tensor(x, dtype=torch.int32)  # noqa: E731
        self.model.m, self.model.s, self.model.b = t(ms), t(ss), t(bs)
        self.model.leak, self.model.shift, self.model.theta = leak, shift, theta

    async def reset_state(self) -> None:
        await self.drain()
        self.dut.reset_state.value = 1
        await RisingEdge(self.dut.clk)
        self.dut.reset_state.value = 0
        self.model.reset()

    def check(self, what: str) -> None:
        assert not self.sink.protocol_errors, self.sink.protocol_errors[:5]
        assert not self.mismatches, f"{what}: {len(self.mismatches)} mismatches:\n" + "\n".join(self.mismatches[:10])


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_random_layers(dut):
    """Random parameters (extremes, rounding, integrating), several time steps, random idle/backpressure."""
    env = await Env(dut, 21).start()
    c = env.P * env.G
    fired = total = 0
    for li, kind in enumerate(["extreme", "rounding", "integrating"] * 3):
        leak, shift, theta, ms, ss, bs, acc = random_layer(env.rng, c, kind)
        await env.program(leak, shift, theta, ms, ss, bs)
        sweep = li % 2 == 1
        if sweep:
            await env.reset_state()
        env.pauses(env.rng.choice([0.0, 0.2, 0.5]), env.rng.choice([0.0, 0.3, 0.7]))
        steps = env.rng.randint(3, 6)
        order = list(range(env.NN))
        for t in range(steps):
            env.rng.shuffle(order)  # any neuron order within a time step
            for n in order:
                for g in range(env.G):
                    env.src.send_nowait({"data": [acc() for _ in range(env.P)], "group": g, "index": n,
                                         "first": int(t == 0 and not sweep)})
        before = env.beats
        await env.drain()
        env.check(f"layer {li} ({kind}, {'sweep' if sweep else 'first flag'})")
        assert env.beats - before == steps * env.NN * env.G
        spikes = sum(bin(e).count("1") for e in env.out_spikes[before:])
        fired, total = fired + spikes, total + steps * env.NN * c
    assert 0 < fired < total, (fired, total)  # the layers fire, but not everywhere


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_spike_mix_and_same_neuron(dut):
    """Back-to-back beats of one neuron (read-after-write of its membrane), spikes neither all 0 nor all 1."""
    env = await Env(dut, 22).start()
    c = env.P * env.G
    leak, shift, theta, ms, ss, bs, acc = random_layer(env.rng, c, "integrating")
    await env.program(leak, shift, theta, ms, ss, bs)
    got: list[int] = []
    env.sink.add_callback(lambda b: got.append(bin(b["spikes"]).count("1")))
    env.pauses(0.0, 0.0)
    for t in range(12):
        for g in range(env.G):
            env.src.send_nowait({"data": [acc() for _ in range(env.P)], "group": g, "index": 0, "first": int(t == 0)})
    env.pauses(0.3, 0.5)
    for t in range(12):
        for g in range(env.G):
            env.src.send_nowait({"data": [acc() for _ in range(env.P)], "group": g, "index": env.NN - 1,
                                 "first": int(t == 0)})
    await env.drain()
    env.check("same neuron back to back")
    assert 0 < sum(got) < len(got) * env.P, got


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_throughput_latency_sweep(dut):
    """No gaps, ready sink: one beat per cycle, beats + 4 cycles (perf); a sweep holds inp for NN * G cycles."""
    env = await Env(dut, 23).start()
    c = env.P * env.G
    await env.program(*random_layer(env.rng, c, "integrating")[:6])
    env.pauses(0.0, 0.0)
    t_in: list[int] = []
    t_out: list[int] = []
    env.mon.add_callback(lambda b: t_in.append(env.loop.cycle))
    env.sink.add_callback(lambda b: t_out.append(env.loop.cycle))
    beats = 3 * env.NN * env.G
    for i in range(beats):
        env.src.send_nowait({"data": [i - 7] * env.P, "group": i % env.G, "index": (i // env.G) % env.NN,
                             "first": int(i < env.NN * env.G)})
    await env.drain()
    env.check("throughput")
    model = requant_lif_cycles(beats)
    assert t_in == list(range(t_in[0], t_in[0] + beats)), "input not one beat per cycle"
    assert t_out[-1] - t_in[0] + 1 == model["total"], (t_out[-1] - t_in[0] + 1, model)
    # reset_state: the sweep keeps inp.ready low for neurons * groups cycles once the pipeline drained
    sweep = requant_lif_cycles(0, neurons=env.NN, groups=env.G, resets=1)["clear"]
    dut.reset_state.value = 1
    await RisingEdge(dut.clk)
    dut.reset_state.value = 0
    env.model.reset()
    low = 0
    while True:
        await RisingEdge(dut.clk)
        if value_int(dut.inp__ready):
            break
        low += 1
        assert low <= sweep + 4, low
    assert sweep <= low <= sweep + 2, (low, sweep)
    env.src.send_nowait({"data": [5] * env.P, "group": 0, "index": 0, "first": 0})  # membranes are 0 again
    await env.drain()
    env.check("after sweep")
