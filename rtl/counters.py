"""Event counters in a memory: ``N`` wide counters for the logic of ``N`` narrow ones.

Counter ``k`` adds ``inc[k]`` (at most ``max_incs[k]``) every cycle. A flip-flop counter costs one
adder bit and one register bit per counter bit; here the ``width``-bit totals live in an ``N``-word
memory and only a narrow **pending** sum per counter is kept in registers:

* A **sweeper** flushes one counter per cycle, round-robin ``0, 1, .., N-1``: the cycle after its
  address is presented, ``total = (cleared[k] ? 0 : memory[k]) + pending[k]`` is written back to
  ``memory[k]`` and ``pending[k]`` restarts from that cycle's increment (nothing is lost or counted
  twice: the written total is the count up to the end of the previous cycle). The read port is
  transparent for the write port, so a counter flushed on two consecutive cycles reads its new total.
* **Read**: ``rd_strobe`` with ``rd_index = k`` makes the next flush the one of counter ``k`` (the
  sweeper holds for that cycle); one cycle later ``rd_value`` is ``k``'s exact total up to the end of
  that cycle (all 32 bits from one instant: no tearing between bytes). ``rd_value`` is the flush total
  of every cycle; it is meaningful the cycle after a strobe.
* **Clear**: ``clear`` zeroes every counter at once (the ``cleared`` flags mark memory words as 0
  until their next flush; the pending sums restart at 0; increments of the clearing cycle are dropped:
  a clear wins).

Contract: at most one ``rd_strobe`` in any two consecutive cycles. Then the sweeper advances at least
every second cycle, every counter is flushed at least once every ``2 N`` cycles, and ``pending[k]``
needs ``bit_length(2 N max_incs[k])`` bits (:func:`pending_width`). Totals wrap modulo ``2**width``.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import Array, C, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["events_signature", "pending_width", "EventCounters"]


def events_signature(max_spikes: int, max_ops: int) -> wiring.Signature:
    """An engine's per-cycle events (all outputs): ``busy`` / ``starved`` / ``blocked`` (one of the three
    each cycle, as the engine's ``*_cycles`` counters count them), ``spikes`` and ``acc_ops`` (what its
    ``spikes`` / ``acc_ops`` counters add this cycle, at most ``max_spikes`` / ``max_ops``)."""
    return wiring.Signature({
        "busy": Out(1), "starved": Out(1), "blocked": Out(1),
        "spikes": Out(range(max_spikes + 1)), "acc_ops": Out(range(max_ops + 1)),
    })


def pending_width(n: int, max_inc: int) -> int:
    """Bits of a pending sum: it holds at most ``2 n`` cycles of increments of at most ``max_inc``."""
    return max(1, (2 * n * max_inc).bit_length())


class EventCounters(wiring.Component):
    """``len(max_incs)`` counters of ``width`` bits; see the module docstring for the timing.

    Ports: ``inc`` (``N`` increments of ``inc_w = bit_length(max(max_incs))`` bits, each at most its
    ``max_incs[k]``: larger values are a contract violation), ``clear``, ``rd_strobe``, ``rd_index``,
    ``rd_value``. A ``max_incs[k]`` of 0 is a counter that stays 0.
    """

    def __init__(self, max_incs: Sequence[int], *, width: int = 32):
        if not max_incs:
            raise ValueError("max_incs must name at least one counter")
        if any(m < 0 for m in max_incs):
            raise ValueError(f"max_incs must be >= 0, got {list(max_incs)}")
        if not 1 <= width <= 64:
            raise ValueError(f"width must be in 1..64, got {width}")
        self.max_incs = tuple(int(m) for m in max_incs)
        self.width = width
        n = len(self.max_incs)
        self.inc_w = max(1, max(self.max_incs).bit_length())
        super().__init__({
            "inc": In(data.ArrayLayout(self.inc_w, n)),
            "clear": In(1),
            "rd_strobe": In(1),
            "rd_index": In(range(max(2, n))),
            "rd_value": Out(width),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        N, W = len(self.max_incs), self.width
        m.submodules.totals = mem = Memory(shape=W, depth=N, init=[])
        wr = mem.write_port()
        rd = mem.read_port(transparent_for=(wr,))

        pending = [Signal(pending_width(N, mi), name=f"pending{k}") for k, mi in enumerate(self.max_incs)]
        cleared = Signal(N, init=(1 << N) - 1)        # memory word k reads as 0 until its next flush
        sweep = Signal(range(max(2, N)))
        f_idx = Signal(range(max(2, N)))               # the counter flushed this cycle (address of last cycle)

        addr = Signal.like(f_idx)
        m.d.comb += addr.eq(Mux(self.rd_strobe, self.rd_index, sweep))
        m.d.comb += rd.addr.eq(addr)
        m.d.sync += f_idx.eq(addr)
        with m.If(~self.rd_strobe):
            m.d.sync += sweep.eq(Mux(sweep == N - 1, 0, sweep + 1))

        # the flushed counter's cleared flag and pending sum are selected a cycle ahead (f_clr, f_pend: registers),
        # so the total is one adder from flip-flops and the memory's read port. They are the next values of the
        # flag and sum registers (clear aside) at the next flush's address: each counter's next sum is formed
        # once, for its own register; the sweeper's index and the strobed one each select one, and the strobe picks
        incs = [self.inc[k] if self.max_incs[k] else C(0, 1) for k in range(N)]
        pw = max(len(p) for p in pending)
        f_clr = Signal(init=1)                         # (after a reset: counter 0's flag, set)
        f_pend = Signal(pw)
        flushed = [Signal(name=f"flushed{k}") for k in range(N)]      # f_idx == k
        pend_next = [Signal(pw, name=f"pend_next{k}") for k in range(N)]
        clr_next = Signal(N)
        for k in range(N):
            m.d.comb += [
                flushed[k].eq(f_idx == k),
                pend_next[k].eq(Mux(flushed[k], incs[k], pending[k] + incs[k])),
                clr_next[k].eq(cleared[k] & ~flushed[k]),
            ]

        def pick(at):
            return clr_next.bit_select(at, 1), Array(pend_next)[at]
        (clr_s, pend_s), (clr_r, pend_r) = pick(sweep), pick(self.rd_index)
        m.d.sync += [                                  # (the strobe, from the executor, picks last)
            f_clr.eq(self.clear | Mux(self.rd_strobe, clr_r, clr_s)),
            f_pend.eq(Mux(self.clear, 0, Mux(self.rd_strobe, pend_r, pend_s))),
        ]
        total = Signal(W)
        m.d.comb += [
            total.eq(Mux(f_clr, 0, rd.data) + f_pend),
            wr.addr.eq(f_idx), wr.data.eq(total), wr.en.eq(1),
            self.rd_value.eq(total),
        ]
        for k, p in enumerate(pending):
            with m.If(self.clear):
                m.d.sync += [p.eq(0), cleared[k].eq(1)]
            with m.Else():
                m.d.sync += [p.eq(pend_next[k]), cleared[k].eq(clr_next[k])]
        return m
