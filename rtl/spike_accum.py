"""Sparse spike-accumulate engine: a Linear / 1x1 convolution on spike inputs, ``P`` output channels at a time.

Implements exactly ``golden_model.intops.linear_int8`` for spike inputs (``acc[o] = sum_i x[i] W[o][i]``,
``x`` 0/1, ``W`` int8) with a cost that follows the spike count; ``docs/spike_accum.md`` is the prose
contract (interface, error codes, widths, cycle model) and ``golden_model.perf.spike_accum_cycles`` the
executable cycle model.

Weights live on chip in a memory of ``weight_rows`` rows of ``P`` int8 weights, loaded through the
``wload`` stream. A layer with ``c_in`` inputs and ``c_out`` outputs occupies ``c_in * G`` rows from
``base`` on (``G = ceil(c_out / P)`` output groups): row ``base + i * G + g`` holds ``W[g*P + l][i]`` in
lane ``l``. Several layers (tiles of a layer) can stay resident at different bases; rows that no token in
flight reads may be (re)loaded while the engine runs (double buffering).

Structure (issue stage S0, address stage S1, accumulate stage S2, output register + skid register):

* **S0** (issue) takes a command from ``cmd`` when it has no step left to issue, validates it (error
  codes) and turns a TOKEN into *steps*, one per cycle, group-major: ``for g < G: for i in active(x)``.
  ``i`` comes from a log-depth find-first-set over the remaining spike mask, which then loses its lowest
  set bit (``mask & (mask - 1)``), so **no cycle is spent on a zero bit**. A token with ``x = 0`` issues
  one step per group without an add, so every token yields its ``G`` beats. The acceptance cycle issues
  the token's first step.
* **S1** (address) forms the row address ``base + i * G + g`` (a registered ``i`` times the layer's
  ``G``: the multiplier is off the find-first-set path) and presents it to the memory's synchronous
  read port.
* **S2** (accumulate) adds the row (``P`` int8 weights) to the ``P`` accumulators, starting from 0 on a
  group's first step; a group's last step sends the sums to the output register, and the next group
  restarts at once (emission overlaps accumulation).
* **Output**: a registered output plus one skid register. The pipeline stalls (S0, S1, S2 and the read
  port hold) only when S2 finishes a group while the skid register is full, and the skid register is a
  register: ``cmd.ready`` has no combinational path from ``out.ready``.

A CONFIG is accepted while the previous token's last steps are still in S1 / S2: S1 reads ``base`` and
``G`` in the acceptance cycle itself, before the clock edge that changes them, and S2 uses no
configuration register.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.attention import find_first_set, popcount

__all__ = [
    "OP_CONFIG", "OP_TOKEN", "OP_STATUS_CLEAR",
    "ERR_NONE", "ERR_DIM", "ERR_ROWS", "ERR_NO_CONFIG", "ERR_BITS", "ERR_WADDR", "ERR_OP",
    "COUNTER_W", "IN_MAX_LIMIT", "ROWS_LIMIT", "C_IN_W", "GROUPS_W", "BASE_W", "SKIP_W", "ADDR_W",
    "acc_width", "cmd_layout", "wload_layout", "out_layout", "status_signature", "SpikeAccumulator",
]

OP_CONFIG, OP_TOKEN, OP_STATUS_CLEAR = 0, 1, 3        # op 2 is reserved (error ERR_OP)
ERR_NONE, ERR_DIM, ERR_ROWS, ERR_NO_CONFIG, ERR_BITS, ERR_WADDR, ERR_OP = range(7)
COUNTER_W = 32
IN_MAX_LIMIT = 1024            # C_IN_MAX <= 1024: the c_in field (11 bits) can still say C_IN_MAX + 1
ROWS_LIMIT = 1 << 16           # weight_rows <= 65536: 16-bit addresses and bases
C_IN_W, GROUPS_W, BASE_W, SKIP_W, ADDR_W = 11, 16, 16, 16, 16

# configuration states
_S_NONE, _S_OPEN, _S_BROKEN = 0, 1, 2


def acc_width(in_max: int) -> int:
    """Bits of a signed accumulator lane: ``bit_length(128 * C_IN_MAX - 1) + 1``.

    A lane sums the weights ``W[o][i]`` of the active inputs of one token, at most ``c_in <= C_IN_MAX``
    distinct ``i``, each in ``[-128, 127]``, so every partial and final sum lies in
    ``[-128 * C_IN_MAX, 127 * C_IN_MAX]``. Signed ``w`` bits hold ``[-2**(w-1), 2**(w-1) - 1]``, which
    contains that interval iff ``2**(w-1) >= 128 * C_IN_MAX`` (then ``127 * C_IN_MAX < 2**(w-1)`` too),
    i.e. ``w - 1 >= ceil(log2(128 * C_IN_MAX)) = bit_length(128 * C_IN_MAX - 1)``. The lower bound is
    reached (``x`` all ones, ``W = -128``), so for a power-of-two ``C_IN_MAX`` no narrower width works:
    ``acc_width(16) = 12``, ``acc_width(256) = 16``, ``acc_width(1024) = 18``.
    """
    if in_max < 1:
        raise ValueError(f"in_max must be positive, got {in_max}")
    return (128 * in_max - 1).bit_length() + 1


def cmd_layout(in_max: int) -> data.StructLayout:
    """Command payload: ``op`` 0 CONFIG / 1 TOKEN / 3 STATUS_CLEAR (2 reserved); see ``docs/spike_accum.md``."""
    return data.StructLayout({
        "op": 2, "c_in": C_IN_W, "groups": GROUPS_W, "base": BASE_W, "skip": SKIP_W, "x": in_max,
    })


def wload_layout(lanes: int) -> data.StructLayout:
    """Weight-load beat: one memory row (``P`` int8 weights, lane ``l`` at bits ``[8l, 8l + 8)``) and its address."""
    return data.StructLayout({"addr": ADDR_W, "data": data.ArrayLayout(signed(8), lanes)})


def out_layout(lanes: int, weight_rows: int, acc_w: int) -> data.StructLayout:
    """Output beat: ``P`` signed accumulators of output group ``group``, the token's last-beat flag and the
    token's ``skip`` count. ``G <= weight_rows`` (a layer needs ``c_in * G >= G`` rows), so ``group`` has
    ``ceil_log2(weight_rows)`` bits."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(acc_w), lanes),
        "group": range(weight_rows),
        "last": 1,
        "skip": SKIP_W,
    })


def status_signature() -> wiring.Signature:
    """Status and performance counters (all outputs of the engine)."""
    return wiring.Signature({
        "error": Out(1),
        "error_code": Out(4),
        "busy": Out(1),
        "busy_cycles": Out(COUNTER_W),
        "starved_cycles": Out(COUNTER_W),
        "blocked_cycles": Out(COUNTER_W),
        "spikes": Out(COUNTER_W),
        "acc_ops": Out(COUNTER_W),
    })


class SpikeAccumulator(wiring.Component):
    """Sparse spike accumulate (Linear / 1x1 conv on spikes), ``P`` output channels per cycle.

    Parameters
    ----------
    in_max : int
        C_IN_MAX, the largest number of input channels of one token (1..1024).
    lanes : int
        P, parallel output-channel accumulators (lanes of a weight row and of an output beat).
    weight_rows : int
        Depth of the weight memory in rows of P int8 weights (1..65536). A layer needs
        ``c_in * ceil(c_out / P)`` rows; the driver tiles layers that do not fit.
    acc_w : int, optional
        Accumulator / output lane width (signed); default and minimum :func:`acc_width` ``(in_max)``
        (no partial or final sum can wrap, proof there), at most 32 (``intops`` accumulators are int32).
    """

    def __init__(self, *, in_max: int = 256, lanes: int = 16, weight_rows: int = 1024, acc_w: int | None = None):
        if not 1 <= in_max <= IN_MAX_LIMIT:
            raise ValueError(f"in_max must be in 1..{IN_MAX_LIMIT}, got {in_max}")
        if lanes < 1:
            raise ValueError(f"lanes must be positive, got {lanes}")
        if not 1 <= weight_rows <= ROWS_LIMIT:
            raise ValueError(f"weight_rows must be in 1..{ROWS_LIMIT}, got {weight_rows}")
        min_w = acc_width(in_max)
        acc_w = min_w if acc_w is None else acc_w
        if not min_w <= acc_w <= 32:
            raise ValueError(f"acc_w must be in {min_w}..32 for in_max = {in_max}, got {acc_w}")
        self.in_max = in_max
        self.lanes = lanes
        self.weight_rows = weight_rows
        self.acc_w = acc_w
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout(in_max))),
            "wload": In(stream.Signature(wload_layout(lanes))),
            "out": Out(stream.Signature(out_layout(lanes, weight_rows, acc_w))),
            "status": Out(status_signature()),
            "counters_clear": In(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        CM, P, R, AW = self.in_max, self.lanes, self.weight_rows, self.acc_w

        m.submodules.w_mem = w_mem = Memory(shape=data.ArrayLayout(signed(8), P), depth=R, init=[])
        wr = w_mem.write_port()
        rd = w_mem.read_port()   # rows of the running layer are not written: no transparency needed

        # ---- weight load: one row per cycle, never back-pressured ---------------------------
        wl = self.wload.payload
        w_bad = Signal(1)
        m.d.comb += [
            self.wload.ready.eq(1),
            w_bad.eq(self.wload.valid & (wl.addr >= R)),
            wr.addr.eq(wl.addr),
            wr.data.eq(wl.data),
            wr.en.eq(self.wload.valid & (wl.addr < R)),
        ]

        # ---- configuration and error registers ----------------------------------------------
        state = Signal(2, init=_S_NONE)
        c_groups = Signal(range(R + 1))        # G
        c_glast = Signal(range(R))             # G - 1
        c_base = Signal(range(R))
        c_lowmask = Signal(CM)                 # bit j set iff j < c_in
        cmd_err = Signal(1)                    # a command error since the last valid CONFIG / STATUS_CLEAR
        w_err = Signal(1)                      # a weight-address error since the last STATUS_CLEAR
        error_code = Signal(4)

        # ---- issue stage S0 -------------------------------------------------------------------
        a_pend = Signal(1)                     # steps of an accepted token left to issue
        a_mask = Signal(CM)                    # active inputs of the current group not yet issued
        a_x = Signal(CM)                       # the token's spikes (reloaded for every group)
        a_g = Signal(range(R))
        a_first = Signal(1)
        a_nz = Signal(1)
        a_skip = Signal(SKIP_W)

        # ---- address stage S1 and accumulate stage S2 ----------------------------------------
        s1_valid, s1_first, s1_last, s1_tlast, s1_nz = (Signal(1, name=f"s1_{n}")
                                                        for n in ("valid", "first", "last", "tlast", "nz"))
        s1_idx = Signal(range(CM))
        s1_g = Signal(range(R))
        s1_skip = Signal(SKIP_W)
        s2_valid, s2_first, s2_last, s2_tlast, s2_nz = (Signal(1, name=f"s2_{n}")
                                                        for n in ("valid", "first", "last", "tlast", "nz"))
        s2_g = Signal(range(R))
        s2_skip = Signal(SKIP_W)
        acc = Signal(data.ArrayLayout(signed(AW), P))

        # output register (out.valid / out.payload) plus one skid register
        skid_valid = Signal(1)
        skid = Signal.like(self.out.payload)
        emit = Signal(1)
        stall = Signal(1)
        m.d.comb += [
            emit.eq(s2_valid & s2_last),
            stall.eq(emit & skid_valid),
        ]

        # ---- command decode -------------------------------------------------------------------
        cmd = self.cmd.payload
        take = Signal(1)
        m.d.comb += [
            self.cmd.ready.eq(~a_pend & ~stall),
            take.eq(self.cmd.valid & self.cmd.ready),
        ]
        raise_err = Signal(1)
        err_code_new = Signal(4)
        cfg_ok = Signal(1)
        accept = Signal(1)
        clear = Signal(1)
        rows_needed = Signal(BASE_W + C_IN_W + GROUPS_W + 1)
        m.d.comb += rows_needed.eq(cmd.base + cmd.c_in * cmd.groups)
        high_x = (cmd.x & ~c_lowmask).any()

        with m.If(take):
            with m.Switch(cmd.op):
                with m.Case(OP_CONFIG):
                    with m.If((cmd.c_in == 0) | (cmd.c_in > CM) | (cmd.groups == 0)):
                        m.d.comb += [raise_err.eq(1), err_code_new.eq(ERR_DIM)]
                    with m.Elif(rows_needed > R):
                        m.d.comb += [raise_err.eq(1), err_code_new.eq(ERR_ROWS)]
                    with m.Else():
                        m.d.comb += cfg_ok.eq(1)
                with m.Case(OP_TOKEN):
                    with m.Switch(state):
                        with m.Case(_S_NONE):
                            m.d.comb += [raise_err.eq(1), err_code_new.eq(ERR_NO_CONFIG)]
                        with m.Case(_S_OPEN):
                            with m.If(high_x):
                                m.d.comb += [raise_err.eq(1), err_code_new.eq(ERR_BITS)]
                            with m.Else():
                                m.d.comb += accept.eq(1)
                        # _S_BROKEN: dropped silently
                with m.Case(OP_STATUS_CLEAR):
                    m.d.comb += clear.eq(1)
                with m.Default():
                    m.d.comb += [raise_err.eq(1), err_code_new.eq(ERR_OP)]

        with m.If(raise_err):
            m.d.sync += [cmd_err.eq(1), error_code.eq(err_code_new), state.eq(_S_BROKEN)]
        with m.If(cfg_ok):
            m.d.sync += [
                cmd_err.eq(0), error_code.eq(Mux(w_err, ERR_WADDR, ERR_NONE)), state.eq(_S_OPEN),
                c_groups.eq(cmd.groups), c_glast.eq(cmd.groups - 1), c_base.eq(cmd.base),
                c_lowmask.eq(Cat(*(cmd.c_in > j for j in range(CM)))),
            ]
        with m.If(clear):
            m.d.sync += [cmd_err.eq(0), w_err.eq(0), error_code.eq(ERR_NONE), state.eq(_S_NONE)]
        with m.If(w_bad):  # last: a weight error is never lost, whatever the command did this cycle
            m.d.sync += [w_err.eq(1), error_code.eq(ERR_WADDR)]

        # ---- step generation (S0) -------------------------------------------------------------
        cur_mask = Signal(CM)
        cur_x = Signal(CM)
        cur_g = Signal(range(R))
        cur_first = Signal(1)
        cur_nz = Signal(1)
        cur_skip = Signal(SKIP_W)
        issue = Signal(1)
        with m.If(a_pend):
            m.d.comb += [
                cur_mask.eq(a_mask), cur_x.eq(a_x), cur_g.eq(a_g), cur_first.eq(a_first),
                cur_nz.eq(a_nz), cur_skip.eq(a_skip), issue.eq(~stall),
            ]
        with m.Else():
            m.d.comb += [
                cur_mask.eq(cmd.x), cur_x.eq(cmd.x), cur_g.eq(0), cur_first.eq(1),
                cur_nz.eq(cmd.x.any()), cur_skip.eq(cmd.skip), issue.eq(accept),
            ]

        ffs_any, ffs_idx = find_first_set(cur_mask)
        idx = Signal(range(CM))
        m.d.comb += idx.eq(Mux(ffs_any, ffs_idx, 0))
        rest = Signal(CM)
        m.d.comb += rest.eq(cur_mask & (cur_mask - 1))
        i_last = Signal(1)
        g_last = Signal(1)
        m.d.comb += [i_last.eq(~cur_nz | (rest == 0)), g_last.eq(cur_g == c_glast)]

        with m.If(~stall):
            m.d.sync += [
                s1_valid.eq(issue), s1_idx.eq(idx), s1_g.eq(cur_g), s1_first.eq(cur_first),
                s1_last.eq(i_last), s1_tlast.eq(i_last & g_last), s1_nz.eq(cur_nz), s1_skip.eq(cur_skip),
            ]
        with m.If(issue):
            m.d.sync += [a_x.eq(cur_x), a_nz.eq(cur_nz), a_skip.eq(cur_skip)]
            with m.If(i_last):   # group done: restart the mask for the next group, or the token is done
                m.d.sync += [a_mask.eq(cur_x), a_first.eq(1), a_g.eq(cur_g + 1), a_pend.eq(~g_last)]
            with m.Else():
                m.d.sync += [a_mask.eq(rest), a_first.eq(0), a_g.eq(cur_g), a_pend.eq(1)]

        # ---- S1: row address, synchronous read ------------------------------------------------
        addr = Signal(BASE_W + C_IN_W + GROUPS_W + 1)
        m.d.comb += [
            addr.eq(c_base + s1_g + s1_idx * c_groups),
            rd.addr.eq(addr),
            rd.en.eq(~stall),
        ]
        with m.If(~stall):
            m.d.sync += [
                s2_valid.eq(s1_valid), s2_g.eq(s1_g), s2_first.eq(s1_first), s2_last.eq(s1_last),
                s2_tlast.eq(s1_tlast), s2_nz.eq(s1_nz), s2_skip.eq(s1_skip),
            ]

        # ---- S2: accumulate ---------------------------------------------------------------------
        nxt = Signal(data.ArrayLayout(signed(AW), P))
        for lane in range(P):
            m.d.comb += nxt[lane].eq(Mux(s2_first, 0, acc[lane]) + Mux(s2_nz, rd.data[lane], 0))
        with m.If(s2_valid & ~s2_last & ~stall):
            m.d.sync += acc.eq(nxt)

        beat = Signal.like(self.out.payload)
        m.d.comb += [beat.data.eq(nxt), beat.group.eq(s2_g), beat.last.eq(s2_tlast), beat.skip.eq(s2_skip)]
        new_beat = Signal(1)
        m.d.comb += new_beat.eq(emit & ~stall)
        with m.If(self.out.ready | ~self.out.valid):   # the output register is free this edge
            with m.If(skid_valid):
                m.d.sync += [self.out.payload.eq(skid), self.out.valid.eq(1), skid_valid.eq(0)]
            with m.Elif(new_beat):
                m.d.sync += [self.out.payload.eq(beat), self.out.valid.eq(1)]
            with m.Else():
                m.d.sync += self.out.valid.eq(0)
        with m.Elif(new_beat):                          # held output: the beat waits in the skid
            m.d.sync += [skid.eq(beat), skid_valid.eq(1)]

        # ---- status and counters ------------------------------------------------------------------
        st = self.status
        m.d.comb += [
            st.error.eq(cmd_err | w_err),
            st.error_code.eq(error_code),
            st.busy.eq(a_pend | s1_valid | s2_valid | self.out.valid | skid_valid),
        ]
        busy_now = Signal(1)
        starved_now = Signal(1)
        m.d.comb += [
            busy_now.eq(~stall & (a_pend | take)),
            starved_now.eq(~stall & ~a_pend & ~self.cmd.valid),
        ]
        counters = [st.busy_cycles, st.starved_cycles, st.blocked_cycles, st.spikes, st.acc_ops]
        with m.If(self.counters_clear):
            m.d.sync += [c.eq(0) for c in counters]
        with m.Else():
            m.d.sync += [
                st.busy_cycles.eq(st.busy_cycles + busy_now),
                st.starved_cycles.eq(st.starved_cycles + starved_now),
                st.blocked_cycles.eq(st.blocked_cycles + stall),
                st.acc_ops.eq(st.acc_ops + Mux(issue & cur_nz, P, 0)),
            ]
            with m.If(accept):
                m.d.sync += st.spikes.eq(st.spikes + popcount(cmd.x))
        return m
