"""cocotb testbench of ``rtl.attention_heads.ParallelHeads`` (heads in parallel) on Verilator.

Windows of ``U`` heads (one per unit) have their KV and Q commands interleaved round robin in one
command stream (random idle cycles); the merged output (random backpressure) is split by the beat's
``head`` into per-unit sequences and each is compared with ``==`` to that unit's
:class:`sim.attention_model.EngineModel` (commands routed by ``head % U``, local head ``head // U``).
Counters per unit (``status[u]``) equal the models'; with no gaps and a ready sink the heads overlap
(fewer cycles than the units' busy cycles summed). Random windows at several densities and, with
``SPIKEVID_TB_TRACES``, the real q/k/v windows of the shipped tiny models, plain and compact.
"""

from __future__ import annotations

import os
import random

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from driver.attention import encode_window
from rtl.attention import OP_KV, OP_Q
from rtl.attention_heads import ParallelHeads
from sim.attention_model import EngineModel
from sim.streams import ClockLoop, StreamSink, StreamSource, payload_layout, random_pauses, value_int
from sim.verilator import tb_params

PARAMS = tb_params()
TRACES_ENV = "SPIKEVID_TB_TRACES"
COUNTERS = ("busy_cycles", "starved_cycles", "blocked_cycles", "spikes", "acc_ops")


class Env:
    def __init__(self, dut, seed: int):
        self.dut = dut
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        ref = ParallelHeads(**PARAMS)
        self.U, self.H, self.D, self.P = ref.units, ref.heads, ref.dim_max, ref.lanes
        self.N = ref.max_tokens
        self.cmd_layout = payload_layout(ref, "cmd")
        self.out_layout = payload_layout(ref, "out")
        self.models = [EngineModel(self.D, self.P, self.N, self.H // self.U) for _ in range(self.U)]
        self.expected: list[list[dict]] = [[] for _ in range(self.U)]
        self.got: list[list[dict]] = [[] for _ in range(self.U)]

    async def start(self, idle: float, backpressure: float) -> Env:
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.rst.value = 1
        dut.counters_clear.value = 0
        dut.cmd__valid.value = 0
        dut.out__ready.value = 0
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        self.loop = ClockLoop(dut.clk)
        self.src = StreamSource(dut, "cmd", self.cmd_layout, self.loop, random_pauses(self.rng.randrange(99), idle))
        self.sink = StreamSink(dut, "out", self.out_layout, self.loop,
                               random_pauses(self.rng.randrange(99), backpressure), keep=False)
        self.sink.add_callback(lambda b: self.got[b["head"] % self.U].append(b))
        await RisingEdge(dut.clk)
        return self

    def windows(self, wins: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]], compact: bool) -> None:
        """One window per unit: CONFIGs, then KV and Q commands interleaved round robin."""
        per = []
        for u, (mode, k, v, q) in enumerate(wins):
            head = u + self.U * self.rng.randrange(self.H // self.U)
            per.append([dict(c, head=head) for c in encode_window(k, v, q, mode, head=head, compact=compact)])
        cmds = [cs[0] for cs in per]
        for op in (OP_KV, OP_Q):
            lists = [[c for c in cs[1:] if c["op"] == op] for cs in per]
            for i in range(max(len(x) for x in lists)):
                cmds += [x[i] for x in lists if i < len(x)]
        for c in cmds:
            u = c["head"] % self.U
            self.expected[u] += [dict(b, head=b["head"] * self.U + u)
                                 for b, _ in self.models[u].command(dict(c, head=c["head"] // self.U))]
            self.src.send_nowait(c)

    async def check(self, what: str) -> None:
        want = sum(len(e) for e in self.expected)
        assert want > 0, f"{what}: no output expected: the test checks nothing"
        for _ in range(200000):
            if not self.src.pending() and sum(len(g) for g in self.got) >= want:
                break
            await ClockCycles(self.dut.clk, 8)
        await ClockCycles(self.dut.clk, 8)
        for u in range(self.U):
            assert self.got[u] == self.expected[u], f"{what}: unit {u} beats differ " \
                f"({len(self.got[u])} got, {len(self.expected[u])} expected)"
            st = {k: value_int(getattr(self.dut, f"status__{u}__{k}")) for k in COUNTERS + ("error",)}
            m = self.models[u]
            assert (st["busy_cycles"], st["spikes"], st["acc_ops"], st["error"]) == (
                m.busy_cycles, m.spikes, m.acc_ops, m.error), f"{what}: unit {u} status {st}"
        self.dut._log.info("%s: %d beats checked over %d units", what, want, self.U)


def _spikes(gen: torch.Generator, n: int, d: int, p: float) -> torch.Tensor:
    return (torch.rand(n, d, generator=gen) < p).to(torch.int8)


@cocotb.test(timeout_time=400, timeout_unit="ms")
async def test_random_windows(dut):
    env = await Env(dut, 21).start(idle=0.2, backpressure=0.3)
    n = min(env.N, 24)
    for rnd, density in enumerate((0.0, 0.05, 0.2, 0.5, 1.0)):
        wins = [(env.rng.choice(("dot", "hamming")), *(_spikes(env.gen, r, env.D, density) for r in (n, n, 7)))
                for _ in range(env.U)]
        env.windows(wins, compact=bool(rnd % 2))
    await env.check("random windows")


@cocotb.test(timeout_time=400, timeout_unit="ms")
async def test_overlap(dut):
    """No gaps, ready sink: U interleaved heads take fewer cycles than their busy cycles summed."""
    env = await Env(dut, 22).start(idle=0.0, backpressure=0.0)
    n = min(env.N, 16)
    wins = [("dot", *(_spikes(env.gen, r, env.D, 0.3) for r in (n, n, 6))) for _ in range(env.U)]
    t0 = env.loop.cycle
    env.windows(wins, compact=False)
    await env.check("overlap")
    assert env.loop.cycle - t0 < sum(m.busy_cycles for m in env.models), "the heads did not run in parallel"


@cocotb.test(timeout_time=400, timeout_unit="ms")
async def test_traces(dut):
    path = os.environ.get(TRACES_ENV)
    assert path, f"{TRACES_ENV} not set"
    env = await Env(dut, 23).start(idle=0.1, backpressure=0.2)
    wins = [w for w in torch.load(path, weights_only=False) if w["k"].shape[1] <= env.D and w["k"].shape[0] <= env.N]
    assert wins, "no trace window fits this configuration"
    for i in range(0, len(wins) - env.U + 1, env.U):
        group = wins[i:i + env.U]
        env.windows([(w["mode"], w["k"], w["v"], w["q"]) for w in group], compact=bool(i % 2))
    await env.check("trace windows")
