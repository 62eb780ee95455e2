"""Command-level reference model of ``rtl.attention.AttentionEngine`` (``docs/attention_engine.md``).

:class:`EngineModel` applies each command the engine *accepted* and returns the output beats the
engine must emit for it, with the window semantics and error codes of the interface page, the
arithmetic of ``golden_model.intops.attention_kv`` / ``attention_readout`` and the cycle model
``golden_model.perf.attention_cycles_from_popcounts``. The pysim tests and the cocotb testbench
both score the RTL against it; it is also the attention part of the driver's golden emulator.
"""

from __future__ import annotations

import torch

from golden_model import intops
from golden_model.perf import attention_cycles_from_popcounts
from rtl.attention import (
    ERR_BITS,
    ERR_COUNT,
    ERR_DIM,
    ERR_HEAD,
    ERR_NO_WINDOW,
    ERR_NONE,
    OP_CONFIG,
    OP_KV,
    OP_STATUS_CLEAR,
)

__all__ = ["EngineModel", "port_wait_cycles", "unbits"]


def unbits(x: int, dim: int) -> torch.Tensor:
    """Integer (bit i = element i) -> int8 spike vector ``(dim,)``."""
    return torch.tensor([(x >> i) & 1 for i in range(dim)], dtype=torch.int8)


class EngineModel:
    """Expected beats, status and counters of the engine for a sequence of accepted commands.

    Window states: ``none`` (after reset / STATUS_CLEAR: a KV or Q command is error 4), ``open``
    (KV tokens still expected), ``full`` (all KV tokens in: Q commands read out), ``dead`` (after
    an error or an invalid CONFIG: KV and Q are dropped silently). Counters as the RTL's
    ``busy_cycles``, ``spikes``, ``acc_ops``.
    """

    def __init__(self, dim_max: int, lanes: int, max_tokens: int, heads: int):
        self.D, self.P, self.N, self.H = dim_max, lanes, max_tokens, heads
        self.state = "none"
        self.error, self.error_code = 0, ERR_NONE
        self.clear_counters()
        self.commands = 0
        self.o_min = self.o_max = 0  # range of the expected read-out values so far

    def clear_counters(self) -> None:
        self.busy_cycles = self.spikes = self.acc_ops = 0
        self.occupancy: list[int] = []


    def _raise(self, code: int) -> list:
        self.error, self.error_code = 1, code
        self.state = "dead"
        self.busy_cycles += 1
        return []

    def command(self, c: dict) -> list[tuple[dict, str]]:
        """Apply one accepted command; returns the expected output beats, each with a context string.

        ``occupancy`` gets the command's busy cycles (from its transfer to the first cycle the engine
        can take the next command, with no stall)."""
        busy0 = self.busy_cycles
        try:
            return self._command(c)
        finally:
            self.occupancy.append(self.busy_cycles - busy0)

    def _command(self, c: dict) -> list[tuple[dict, str]]:
        self.commands += 1
        op, mode = c["op"], c.get("mode", 0)
        a, b = c.get("a", 0), c.get("b", 0)
        if op == OP_STATUS_CLEAR:
            self.error, self.error_code, self.state = 0, ERR_NONE, "none"
            self.busy_cycles += 1
            return []
        if op == OP_CONFIG:                       # two busy cycles: the transfer and the apply cycle
            self.busy_cycles += 1
            if c.get("head", 0) >= self.H:
                return self._raise(ERR_HEAD)
            if not (1 <= c.get("dim", 0) <= self.D and 0 <= c.get("tokens", 0) <= self.N):
                return self._raise(ERR_DIM)
            self.error, self.error_code = 0, ERR_NONE
            self.mode = "hamming" if mode else "dot"
            self.head, self.dim, self.tokens = c.get("head", 0), c["dim"], c.get("tokens", 0)
            self.state = "open" if self.tokens else "full"
            self.groups = -(-self.dim // self.P)
            self.ks: list[int] = []
            self.vs: list[int] = []
            self.counts = None
            self.q_index = 0
            self.busy_cycles += 1
            return []
        if self.state == "dead":
            self.busy_cycles += 1
            return []
        if self.state == "none":
            return self._raise(ERR_NO_WINDOW)
        if op == OP_KV:
            if self.state == "full":
                return self._raise(ERR_COUNT)
            if (a | b) >> self.dim:
                return self._raise(ERR_BITS)
            if mode:  # V pair: two k-empty tokens
                if len(self.ks) + 2 > self.tokens:
                    return self._raise(ERR_COUNT)
                self.ks += [0, 0]
                self.vs += [a, b]
                self._count(v_pairs=1)
            else:
                self.ks.append(a)
                self.vs.append(b)
                self._count(k_pop=[a.bit_count()])
            if len(self.ks) == self.tokens:
                self.state = "full"
            return []
        # Q
        if self.state == "open":
            return self._raise(ERR_NO_WINDOW if not self.ks else ERR_COUNT)
        if not mode and a >> self.dim:
            return self._raise(ERR_BITS)
        q = 0 if mode else a
        self._count(q_pop=[] if mode else [q.bit_count()], const_requests=int(bool(mode)))
        if self.counts is None:
            k = torch.stack([unbits(x, self.dim) for x in self.ks]) if self.ks else torch.zeros(
                0, self.dim, dtype=torch.int8)
            v = torch.stack([unbits(x, self.dim) for x in self.vs]) if self.vs else torch.zeros(
                0, self.dim, dtype=torch.int8)
            self.counts = intops.attention_kv(k, v)
        o = intops.attention_readout(unbits(q, self.dim).unsqueeze(0), *self.counts, self.mode)[0].tolist()
        self.o_min, self.o_max = min(self.o_min, *o), max(self.o_max, *o)
        o += [0] * (self.groups * self.P - self.dim)
        skip = 0 if mode else c.get("skip", 0)
        what = "const" if mode else f"q#{self.q_index} skip {skip}"
        ctx = f"{self.mode} head {self.head} dim {self.dim} tokens {self.tokens} {what}"
        if not mode:
            self.q_index += 1
        return [({"data": o[g * self.P:(g + 1) * self.P], "group": g, "last": int(g == self.groups - 1),
                  "skip": skip, "const": int(bool(mode)), "head": self.head}, f"{ctx} group {g}")
                for g in range(self.groups)]

    def _count(self, k_pop=(), q_pop=(), v_pairs: int = 0, const_requests: int = 0) -> None:
        cyc = attention_cycles_from_popcounts(k_pop, q_pop, self.dim, self.P, config=False, v_pairs=v_pairs,
                                              const_requests=const_requests)
        self.busy_cycles += cyc["busy"]
        self.spikes += cyc["spikes"]
        self.acc_ops += cyc["acc_ops"]


def port_wait_cycles(occupancy: list[int]) -> int:
    """Cycles a back-to-back source's commands wait at the port beyond the engine's busy cycles.

    A command is taken in its second cycle at the port at the earliest, so the one presented right after
    a command that keeps the engine busy for ``d`` cycles is taken ``max(2, d)`` cycles after it."""
    return sum(max(0, 2 - d) for d in occupancy[:-1])
