"""Command-level reference model of ``rtl.spike_accum.SpikeAccumulator`` (``docs/spike_accum.md``).

:class:`SpikeAccumModel` applies weight-load beats and commands in the order the engine accepted them
and returns the output beats the engine must produce, with the arithmetic of
``golden_model.intops.linear_int8`` and the costs of ``golden_model.perf.spike_accum_cycles``. It
also tracks ``error`` / ``error_code`` and the counters ``busy_cycles``, ``spikes``, ``acc_ops``.

States follow the interface page: ``none`` (after reset / STATUS_CLEAR: a TOKEN is error 3),
``open`` (after a valid CONFIG), ``broken`` (after a command error: TOKENs are dropped silently until
the next valid CONFIG or STATUS_CLEAR). A weight-address error does not change the state; it keeps
``error`` set until STATUS_CLEAR.
"""

from __future__ import annotations

import torch

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
    OP_CONFIG,
    OP_STATUS_CLEAR,
    OP_TOKEN,
)

__all__ = ["SpikeAccumModel", "unbits"]


def unbits(x: int, n: int) -> torch.Tensor:
    """Integer -> int8 spike vector of ``n`` elements (element i = bit i)."""
    return torch.tensor([(x >> i) & 1 for i in range(n)], dtype=torch.int8)


class SpikeAccumModel:
    """What the engine must do for a sequence of weight loads and commands."""

    def __init__(self, in_max: int, lanes: int, weight_rows: int):
        self.C, self.P, self.R = in_max, lanes, weight_rows
        self.mem = torch.zeros(weight_rows, lanes, dtype=torch.int8)  # the RTL memory starts at 0 too
        self.state = "none"
        self.cmd_err = self.w_err = 0
        self.error_code = ERR_NONE
        self.c_in = self.groups = self.base = 0
        self._w: torch.Tensor | None = None   # (G * P, c_in) weight of the open layer, cached
        self.tokens = 0                       # accepted TOKEN commands
        self.acc_min = self.acc_max = 0       # range of the expected accumulators so far
        self.clear_counters()

    @property
    def error(self) -> int:
        return self.cmd_err | self.w_err

    def status(self) -> tuple[int, int]:
        return self.error, self.error_code

    def clear_counters(self) -> None:
        self.busy_cycles = self.spikes = self.acc_ops = 0

    # ---- weight loads -------------------------------------------------------------------------
    def wload(self, beat: dict) -> None:
        addr = beat["addr"]
        if addr >= self.R:
            self.w_err, self.error_code = 1, ERR_WADDR
            return
        self.mem[addr] = torch.tensor(beat["data"], dtype=torch.int8)
        if self._w is not None and self.base <= addr < self.base + self.c_in * self.groups:
            self._w = None

    def weight(self) -> torch.Tensor:
        """The open layer's weight as the engine sees it: ``W[g*P + l][i] = mem[base + i*G + g][l]``."""
        if self._w is None:
            rows = self.mem[self.base:self.base + self.c_in * self.groups]
            self._w = rows.reshape(self.c_in, self.groups, self.P).permute(1, 2, 0).reshape(
                self.groups * self.P, self.c_in).contiguous()
        return self._w

    # ---- commands ------------------------------------------------------------------------------
    def _raise(self, code: int) -> list:
        self.cmd_err, self.error_code, self.state = 1, code, "broken"
        self.busy_cycles += 1
        return []

    def command(self, c: dict) -> list[tuple[dict, str]]:
        """Apply one accepted command; returns the expected output beats, each with a context string."""
        op = c.get("op", 0)
        if op == OP_STATUS_CLEAR:
            self.cmd_err = self.w_err = 0
            self.error_code, self.state = ERR_NONE, "none"
            self.busy_cycles += 1
            return []
        if op == OP_CONFIG:
            c_in, g, base = c.get("c_in", 0), c.get("groups", 0), c.get("base", 0)
            if not (1 <= c_in <= self.C and g >= 1):
                return self._raise(ERR_DIM)
            if base + c_in * g > self.R:
                return self._raise(ERR_ROWS)
            self.cmd_err, self.error_code, self.state = 0, ERR_WADDR if self.w_err else ERR_NONE, "open"
            self.c_in, self.groups, self.base = c_in, g, base
            self._w = None
            self.busy_cycles += 1
            return []
        if op != OP_TOKEN:
            return self._raise(ERR_OP)
        if self.state == "broken":
            self.busy_cycles += 1
            return []
        if self.state == "none":
            return self._raise(ERR_NO_CONFIG)
        x, skip = c.get("x", 0), c.get("skip", 0)
        if x >> self.c_in:
            return self._raise(ERR_BITS)
        cyc = spike_accum_cycles([x.bit_count()], self.groups * self.P, self.P, config=False)
        self.busy_cycles += cyc["busy"]
        self.spikes += cyc["spikes"]
        self.acc_ops += cyc["acc_ops"]
        acc = intops.linear_int8(unbits(x, self.c_in).unsqueeze(0), self.weight())[0]
        self.acc_min, self.acc_max = min(self.acc_min, int(acc.min())), max(self.acc_max, int(acc.max()))
        vals = acc.tolist()
        ctx = f"token #{self.tokens} (c_in {self.c_in}, G {self.groups}, base {self.base})"
        self.tokens += 1
        return [({"data": vals[g * self.P:(g + 1) * self.P], "group": g, "last": int(g == self.groups - 1),
                  "skip": skip}, f"{ctx} group {g}") for g in range(self.groups)]
