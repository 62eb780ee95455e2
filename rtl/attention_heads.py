"""Heads in parallel: ``U`` attention engines behind one command stream and one output stream.

``ParallelHeads(units=U, heads=H, dim_max=..., lanes=..., max_tokens=...)`` holds ``U``
:class:`rtl.attention.AttentionEngine` s with ``H / U`` heads each. Every command carries the global
head in its ``head`` field (KV and Q commands too, unlike a single engine, which ignores it there):
head ``h`` lives in unit ``h % U`` as local head ``h // U``. A command waits only for its own unit,
so KV / Q tokens of different heads interleaved in the stream run concurrently: ``U x P``
accumulate lanes. Output beats are the engines' beats (``head`` made global), merged by a round-robin
arbiter (no unit starves); beats of one head keep their order, beats of different heads
interleave. ``status`` is one :func:`rtl.attention.status_signature` per unit (``status[u]``) and
``counters_clear`` clears all of them. ``U`` must be a power of two (the unit is the head's low bits).

The cycle model per unit is ``golden_model.perf.attention_cycles`` on that unit's commands; the
stream runs at one command per cycle, so a window set of ``U`` heads with interleaved tokens takes
about ``max_u busy_u`` cycles instead of ``sum_u busy_u`` when the units stay fed.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.attention import AttentionEngine, cmd_layout, out_layout, status_signature

__all__ = ["ParallelHeads"]


class ParallelHeads(wiring.Component):
    """``units`` attention engines side by side, routed by head (see the module docs)."""

    def __init__(self, *, units: int = 2, heads: int | None = None, dim_max: int = 64, lanes: int | None = None,
                 max_tokens: int = 4096):
        heads = units if heads is None else heads
        if units < 1 or units & (units - 1):
            raise ValueError(f"units must be a power of two >= 1, got {units}")
        if heads % units or not 1 <= heads <= 256:
            raise ValueError(f"heads must be a multiple of units = {units} in 1..256, got {heads}")
        self.units = units
        self.heads = heads
        self.engines = [AttentionEngine(dim_max=dim_max, lanes=lanes, max_tokens=max_tokens, heads=heads // units)
                        for _ in range(units)]
        eng = self.engines[0]
        self.dim_max, self.lanes, self.max_tokens = eng.dim_max, eng.lanes, eng.max_tokens
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout(dim_max))),
            "out": Out(stream.Signature(out_layout(dim_max, eng.lanes, max_tokens))),
            "status": Out(status_signature()).array(units),
            "counters_clear": In(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        U = self.units
        shift = (U - 1).bit_length()
        cmd = self.cmd.payload
        unit = Signal(range(U))
        m.d.comb += unit.eq(cmd.head[:shift] if shift else 0)

        for u, eng in enumerate(self.engines):
            m.submodules[f"engine{u}"] = eng
            sel = unit == u
            m.d.comb += [
                eng.cmd.payload.eq(cmd),
                eng.cmd.payload.head.eq(cmd.head >> shift),
                eng.cmd.valid.eq(self.cmd.valid & sel),
                eng.counters_clear.eq(self.counters_clear),
            ]
            with m.If(sel):
                m.d.comb += self.cmd.ready.eq(eng.cmd.ready)
            wiring.connect(m, wiring.flipped(self.status[u]), eng.status)

        # round-robin merge into a registered output: the unit after the last winner goes first
        last = Signal(range(U))
        take = Signal(1)
        m.d.comb += take.eq(~self.out.valid | self.out.ready)
        with m.If(self.out.ready):
            m.d.sync += self.out.valid.eq(0)
        granted = Signal(1)
        winner = Signal(range(U))
        with m.Switch(last):
            for prev in range(U):
                with m.Case(prev):
                    order = [(prev + i) % U for i in range(1, U + 1)]
                    with m.If(self.engines[order[0]].out.valid):
                        m.d.comb += [granted.eq(1), winner.eq(order[0])]
                    for u in order[1:]:
                        with m.Elif(self.engines[u].out.valid):
                            m.d.comb += [granted.eq(1), winner.eq(u)]
        for u, eng in enumerate(self.engines):
            with m.If(take & granted & (winner == u)):
                m.d.comb += eng.out.ready.eq(1)
                beat = eng.out.payload
                m.d.sync += [
                    self.out.valid.eq(1),
                    self.out.payload.eq(beat),
                    self.out.payload.head.eq((beat.head << shift) | u),
                    last.eq(u),
                ]
        return m
