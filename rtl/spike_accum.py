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

Structure (front FIFO F, issue stage S0, index stage S1, address stage S2, read stage S3, weight
stage S4, accumulate stage S5, output register + skid register):

* **F** (2 entries; ``queue_depth`` 1 or 0 for fewer) takes a command from ``cmd`` whenever it is not full
  (``cmd.ready = ~full``, a register), validates it at once against the configuration registers (error codes, CONFIG,
  STATUS_CLEAR: the status is the one of the commands taken so far, as before) and queues one entry per
  command: a TOKEN to issue, with its spikes, per-chunk spike counts and flags and a copy of the layer's
  ``base`` / ``G`` (so a CONFIG taken while earlier tokens are still queued or running changes nothing
  they read), or a *bubble* (every other command) that costs S0 one cycle. A CONFIG is taken only when
  its payload was already valid the cycle before, so its row check uses a registered ``c_in * G``.
* **S0** (issue) works only from registers: it turns a TOKEN into *steps*, one per cycle, group-major:
  ``for g < G: for i in active(x)``. The mask is walked in chunks of :data:`CHUNK_W` inputs: the lowest
  chunk with a spike left is selected (a prefix OR over ``C_IN_MAX / 16`` chunk flags) and loses its
  lowest spike (``mask & (mask - 1)`` on 16 bits), so **no cycle is spent on a zero bit** and no carry
  or reduction runs over the whole mask. "Last step of the group" is read off per-chunk flags (any /
  two or more spikes left), kept from per-chunk counts with "three or more" registered beside them (the
  next "two or more"). A token with ``x = 0`` issues one step per group without an add, so every token
  yields its ``G`` beats. The next entry is loaded in the cycle of the
  token's last step (or the bubble's cycle), so tokens follow each other without a gap.
* **S1** (index) finds the spike within the selected chunk (16-bit find-first-set) and forms ``i``.
* **S2** (address) forms the row address ``base + i * G + g`` from registered operands (the multiplier is
  a stage of its own) into a register.
* **S3** (read) presents that register to the memory's synchronous read port, so the address fanning
  out to the ``P * 8 / 36`` block RAMs starts at a flip-flop.
* **S4** (weight) registers the row the memory returns (``P`` int8 weights; zero for a step without an
  add), so no adder follows the block RAM's output (the ECP5 DP16KD's clock-to-output is 5.8 ns, and
  at ``P = 64`` the rows come from block RAMs spread over the die).
* **S5** (accumulate) adds the registered row to the ``P`` accumulators, starting from 0 on a
  group's first step; a group's last step sends the sums to the output register, and the next group
  restarts at once (emission overlaps accumulation).
* **Output**: a registered output plus one skid register. The pipeline stalls (S0 .. S5 and the read
  port hold; F still takes commands while not full) only when S5 finishes a group while the skid
  register is full; ``cmd.ready`` has no combinational path from ``out.ready``.

Throughput is unchanged by the pipeline (one step per cycle, the busy-cycle model of
``golden_model.perf.spike_accum_cycles``); the first command to the last beat takes ``busy +``
:data:`LATENCY` cycles with back-to-back commands and a ready sink.
"""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.attention import find_first_set, popcount
from rtl.counters import events_signature

__all__ = [
    "OP_CONFIG", "OP_TOKEN", "OP_STATUS_CLEAR",
    "ERR_NONE", "ERR_DIM", "ERR_ROWS", "ERR_NO_CONFIG", "ERR_BITS", "ERR_WADDR", "ERR_OP",
    "thermometer", "COUNTER_W", "CHUNK_W", "LATENCY", "IN_MAX_LIMIT", "ROWS_LIMIT", "C_IN_W", "GROUPS_W", "BASE_W",
    "SKIP_W", "ADDR_W",
    "acc_width", "cmd_layout", "wload_layout", "out_layout", "status_signature", "SpikeAccumulator",
]

OP_CONFIG, OP_TOKEN, OP_STATUS_CLEAR = 0, 1, 3        # op 2 is reserved (error ERR_OP)
ERR_NONE, ERR_DIM, ERR_ROWS, ERR_NO_CONFIG, ERR_BITS, ERR_WADDR, ERR_OP = range(7)
COUNTER_W = 32
CHUNK_W = 16                   # S0 walks the spike mask in chunks of 16 inputs
LATENCY = 8                    # first command transfer to last beat transfer = busy + LATENCY (docs s. 5)
IN_MAX_LIMIT = 1024            # C_IN_MAX <= 1024: the c_in field (11 bits) can still say C_IN_MAX + 1
ROWS_LIMIT = 1 << 16           # weight_rows <= 65536: 16-bit addresses and bases
C_IN_W, GROUPS_W, BASE_W, SKIP_W, ADDR_W = 11, 16, 16, 16, 16



def thermometer(n: Value, width: int) -> Value:
    """``width`` bits, bit ``j`` set iff ``n > j`` (``n`` unsigned). Built level by level on ``n``'s bits
    (about ``2 * width`` two-input gates, no comparators: ``width`` compares against constants would each be
    a carry chain)."""
    n = Value.cast(n)
    k = max(1, (width - 1).bit_length())
    low = n[:k]
    bits = [C(0, 1)]                           # level 0: n[:0] = 0 > j never holds
    for lvl in range(k):                       # bits[j] = (n[:lvl] > j), j < 2**lvl
        b = low[lvl] if lvl < len(low) else C(0, 1)
        bits = [b | t for t in bits] + [b & t for t in bits]
    high = n[k:].any() if len(n) > k else C(0, 1)
    return Cat(*(high | bits[j] for j in range(width)))


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
    queue_depth : int, optional
        Entries of the front FIFO F: 2 (default) lets commands follow each other with no gap; each entry
        less saves its registers (about ``C_IN_MAX + 60`` flip-flops) at the cost of up to one idle S0 cycle
        per command: with 1, a command enters F only in the cycle after its predecessor left it; with 0
        there is no F, a command is taken (and validated) straight into S0 once S0 is empty
        (``cmd.ready = ~busy S0``, still a register). Results and busy cycles are the same; the iCE40
        configuration uses 0 (its executor needs several cycles per token anyway).
    """

    def __init__(self, *, in_max: int = 256, lanes: int = 16, weight_rows: int = 1024, acc_w: int | None = None,
                 queue_depth: int = 2):
        if queue_depth not in (0, 1, 2):
            raise ValueError(f"queue_depth must be 0, 1 or 2, got {queue_depth}")
        self.queue_depth = queue_depth
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
            "events": Out(events_signature(1, lanes)),
            "counters_clear": In(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        CM, P, R, AW = self.in_max, self.lanes, self.weight_rows, self.acc_w

        m.submodules.w_mem = w_mem = Memory(shape=data.ArrayLayout(signed(8), P), depth=R, init=[])
        wr = w_mem.write_port()
        rd = w_mem.read_port()   # rows of the running layer are not written: no transparency needed

        # ---- weight load: one row per cycle, never back-pressured ---------------------------
        # the row, its address and the range check are registered first; the memory is written from those
        # registers in the next cycle (a token reads its rows three cycles after its transfer at the earliest)
        wl = self.wload.payload
        w_bad = Signal(1)
        wl_ok = Signal(1)
        wl_addr = Signal.like(wl.addr)
        wl_data = Signal.like(wl.data)
        m.d.sync += [wl_ok.eq(self.wload.valid & (wl.addr < R)), wl_addr.eq(wl.addr), wl_data.eq(wl.data)]
        m.d.comb += [
            self.wload.ready.eq(1),
            w_bad.eq(self.wload.valid & (wl.addr >= R)),      # (the error is flagged at the transfer)
            wr.addr.eq(wl_addr),
            wr.data.eq(wl_data),
            wr.en.eq(wl_ok),
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

        # ---- front FIFO F (2 entries): commands are validated as they are taken --------------
        # every command becomes one entry: a token to issue, or a *bubble* (CONFIG, STATUS_CLEAR, a dropped
        # or erroneous command) that costs the issue stage one busy cycle. A token entry carries its spikes,
        # per-chunk spike counts / flags (precomputed here, off the issue loop) and a copy of the layer's
        # configuration, so CONFIG changes nothing that a queued or running token still reads.
        W = min(CHUNK_W, CM)                   # chunk width of the mask walk
        K = -(-CM // W)                        # chunks
        CW = W.bit_length()                    # bits of a chunk's spike count
        chunks = [(c * W, min((c + 1) * W, CM)) for c in range(K)]
        ent_layout = data.StructLayout({
            "tok": 1, "nz": 1, "x": CM, "cnt": data.ArrayLayout(CW, K), "any": K, "two": K, "three": K,
            "skip": SKIP_W, "base": range(R), "groups": range(R + 1), "glast": range(R),
        })
        QD = self.queue_depth
        f_count = Signal(range(QD + 1)) if QD else C(0, 1)
        f_e = [Signal(ent_layout, name=f"f_e{i}") for i in range(QD)]
        new = Signal(ent_layout)
        cmd = self.cmd.payload

        # ---- issue stage S0 (all state in registers: the mask walk never sees the command port) ---
        a_pend = Signal(1)                     # an entry is in S0 (a token with steps left, or a bubble)
        a = Signal(ent_layout)                 # the entry (its x, cnt, any, two reload each group)
        a_mask = Signal(CM)                    # active inputs of the current group not yet issued
        a_cnt = Signal(data.ArrayLayout(CW, K))  # their count per chunk
        a_any = Signal(K)                      # chunk c has one or more of them
        a_two = Signal(K)                      # chunk c has two or more of them
        a_three = Signal(K)                    # ... three or more (two's next value after a step, registered)
        a_g = Signal(range(R))
        a_g0 = Signal(1)                       # a_g == 0
        a_glast = Signal(1)                    # a_g == G - 1
        a_gleft = Signal(range(R))             # G - 1 - a_g: groups after this one (a_glast: 0, no adder)
        a_first = Signal(1)

        # ---- S1 (index), S2 (address), S3 (read), S4 (accumulate) -----------------------------------
        def stage(prefix):
            return {n: Signal(1, name=f"{prefix}_{n}") for n in ("valid", "first", "last", "tlast", "nz", "g0")}
        s1, s2, s3, s4, s5 = stage("s1"), stage("s2"), stage("s3"), stage("s4"), stage("s5")
        s1_word = Signal(W)
        s1_cidx = Signal(range(K))
        s2_idx = Signal(range(CM))
        s1_g, s2_g, s3_g, s4_g, s5_g = (Signal(range(R), name=f"s{i}_g") for i in (1, 2, 3, 4, 5))
        s1_skip, s2_skip, s3_skip, s4_skip, s5_skip = (Signal(SKIP_W, name=f"s{i}_skip") for i in (1, 2, 3, 4, 5))
        s1_base = Signal(range(R), name="s1_base")
        s2_bg = Signal(range(2 * R), name="s2_bg")         # base + g, added in S1
        s1_groups, s2_groups = Signal(range(R + 1), name="s1_groups"), Signal(range(R + 1), name="s2_groups")
        acc = Signal(data.ArrayLayout(signed(AW), P))

        # output register (out.valid / out.payload) plus one skid register. `stall` (= emit & skid_valid) is
        # itself a register, set from the next values of S5 and the skid (below), so every enable in the
        # engine starts at one flip-flop
        skid_valid = Signal(1)
        skid = Signal.like(self.out.payload)
        emit = Signal(1)
        stall = Signal(1)
        m.d.comb += emit.eq(s5["valid"] & s5["last"])

        # ---- command decode (at the transfer into F) ---------------------------------------------
        # CONFIG's checks use registers: the c_in / G range and c_in * G from the payload of the cycle before,
        # base + c_in * G > R from those registers one cycle later, so from the payload two cycles before:
        # this cycle's payload when the command was already valid and not taken in both (streams hold their
        # payload until the transfer). A CONFIG is taken only in such a cycle (two cycles later when it
        # arrives fresh: latency only, S0 still spends one busy cycle on it).
        take = Signal(1)
        hold = Signal(1)                       # the payload was valid (and not taken) a cycle before
        hold2 = Signal(1)                      # ... and two cycles before
        # base + c_in * G > R is decided on operands clamped to KR bits (2**KR - 1 > R): a clamped operand
        # exceeds R exactly when the true one does, so the sum does too, and the carry chain is KR bits long
        KR = (R + 1).bit_length()

        def clamp(x):
            x = Value.cast(x)
            return x if len(x) <= KR else Mux(x[KR:].any(), (1 << KR) - 1, x[:KR])
        cfg_prod = Signal(len(cmd.c_in) + len(cmd.groups))     # c_in * G (the multiplier's own register)
        cfg_base = Signal(KR)                  # clamp(base)
        cfg_dim_bad = Signal(1)                # c_in or G out of range
        m.d.sync += [hold.eq(self.cmd.valid & ~take), hold2.eq(hold & self.cmd.valid & ~take),
                     cfg_prod.eq(cmd.c_in * cmd.groups),
                     cfg_base.eq(clamp(cmd.base)),
                     cfg_dim_bad.eq((cmd.c_in == 0) | (cmd.c_in > CM) | (cmd.groups == 0))]
        m.d.comb += [
            self.cmd.ready.eq(((f_count != QD) if QD else ~a_pend) & (hold2 | (cmd.op != OP_CONFIG))),
            take.eq(self.cmd.valid & self.cmd.ready),
        ]
        raise_err = Signal(1)
        err_code_new = Signal(4)
        cfg_ok = Signal(1)
        accept = Signal(1)
        clear = Signal(1)
        rows_over = Signal(1)                  # clamp(base) + clamp(c_in * G) > R: iff the true sum is
        m.d.sync += rows_over.eq(cfg_base + clamp(cfg_prod) > R)
        high_x = (cmd.x & ~c_lowmask).any()

        with m.If(take):
            with m.Switch(cmd.op):
                with m.Case(OP_CONFIG):
                    with m.If(cfg_dim_bad):
                        m.d.comb += [raise_err.eq(1), err_code_new.eq(ERR_DIM)]
                    with m.Elif(rows_over):
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
                c_lowmask.eq(thermometer(cmd.c_in, CM)),
            ]
        with m.If(clear):
            m.d.sync += [cmd_err.eq(0), w_err.eq(0), error_code.eq(ERR_NONE), state.eq(_S_NONE)]
        with m.If(w_bad):  # last: a weight error is never lost, whatever the command did this cycle
            m.d.sync += [w_err.eq(1), error_code.eq(ERR_WADDR)]

        # the new entry; `tok` is the only field that depends on the validation (a short path)
        m.d.comb += [new.tok.eq(accept), new.x.eq(cmd.x), new.skip.eq(cmd.skip), new.base.eq(c_base),
                     new.groups.eq(c_groups), new.glast.eq(c_glast), new.nz.eq(cmd.x.any())]
        for c, (lo, hi) in enumerate(chunks):
            word = cmd.x[lo:hi]
            pc = popcount(word)
            m.d.comb += [new.cnt[c].eq(pc), new.any[c].eq(word.any()), new.two[c].eq(pc[1:].any()),
                         new.three[c].eq(pc[2:].any() | pc[:2].all())]

        deq = Signal(1)
        if QD == 0:                             # no queue: a command is taken into S0 (below)
            pass
        elif QD == 1:                             # take needs f_count = 0, deq f_count = 1: never both
            with m.If(take):
                m.d.sync += [f_e[0].eq(new), f_count.eq(1)]
            with m.Elif(deq):
                m.d.sync += f_count.eq(0)
        else:                                   # two slots: a take writes slot f_wr, S0 loads slot f_rd, so
            f_wr, f_rd = Signal(1), Signal(1)  # a slot's enable comes from the command handshake only and
            with m.If(take):                   # a dequeue just moves f_rd (S0's done decision is deep)
                with m.If(f_wr):
                    m.d.sync += f_e[1].eq(new)
                with m.Else():
                    m.d.sync += f_e[0].eq(new)
                m.d.sync += f_wr.eq(~f_wr)
            with m.If(deq):
                m.d.sync += f_rd.eq(~f_rd)
            with m.Switch(Cat(deq, take)):
                with m.Case(0b01):
                    m.d.sync += f_count.eq(f_count - 1)
                with m.Case(0b10):
                    m.d.sync += f_count.eq(f_count + 1)

        # ---- S0: one step per cycle from registers ------------------------------------------------
        # sel: the lowest chunk with a spike left; the step's index is in that chunk (found in S1)
        lower = Signal(K)                      # lower[c]: a chunk below c has a spike left
        m.d.comb += lower.eq(Cat(C(0, 1), *(a_any[:c].any() for c in range(1, K))))
        sel = Signal(K)
        m.d.comb += sel.eq(a_any & ~lower)
        # i_last: this step is the group's last (at most one spike left: no chunk with two, at most one
        # chunk with any). A register, set with every change of the mask state from that state's next
        # value, so S0's "entry done" decision, which selects the next value of every S0 register, is
        # one gate from flip-flops
        def one_left(any_, two_):
            any_, two_ = Value.cast(any_), Value.cast(two_)
            low = [any_[:c].any() for c in range(1, K)]
            return ~two_.any() & ~Cat(*(any_[c] & low[c - 1] for c in range(1, K))).any() if K > 1 else ~two_.any()
        i_last = Signal(1)
        word = Signal(W)
        m.d.comb += word.eq(Cat(*[
            Cat(*[sel[c] & a_mask[lo + b] if lo + b < hi else C(0, 1) for (c, (lo, hi)) in enumerate(chunks)]).any()
            for b in range(W)]))
        cidx = Signal(range(K))
        m.d.comb += cidx.eq(Cat(*[Cat(*[sel[c] for c in range(K) if (c >> k) & 1]).any()
                                  for k in range(max(1, (K - 1).bit_length()))]) if K > 1 else 0)

        step = Signal(1)                       # S0 issues a step of a token this cycle
        a_done = Signal(1)                     # the entry in S0 leaves after this cycle
        m.d.comb += [
            step.eq(a_pend & a.tok & ~stall),
            a_done.eq(~a.tok | (i_last & a_glast)),
            deq.eq((~a_pend | a_done) & ~stall & (f_count != 0)),
        ]
        if QD == 2:
            head = Signal(ent_layout)
            m.d.comb += head.eq(Mux(f_rd, f_e[1], f_e[0]))
        else:
            head = f_e[0] if QD else new

        def load_entry(e):
            m.d.sync += [a.eq(e), a_mask.eq(e.x), a_cnt.eq(e.cnt), a_any.eq(e.any), a_two.eq(e.two),
                         a_three.eq(e.three), a_g.eq(0), a_g0.eq(1), a_gleft.eq(e.glast), a_glast.eq(e.glast == 0),
                         a_first.eq(1),
                         i_last.eq(one_left(e.any, e.two))]

        with m.If(~stall):
            m.d.sync += [
                s1["valid"].eq(step), s1["first"].eq(a_first), s1["last"].eq(i_last),
                s1["tlast"].eq(i_last & a_glast), s1["nz"].eq(a.nz), s1["g0"].eq(a_g0),
                s1_word.eq(word), s1_cidx.eq(cidx), s1_g.eq(a_g), s1_skip.eq(a.skip),
                s1_base.eq(a.base), s1_groups.eq(a.groups),
            ]
            with m.If(~a_pend | a_done):
                if QD:
                    m.d.sync += a_pend.eq(f_count != 0)
                    load_entry(head)
                else:                           # the next command enters S0 when taken
                    m.d.sync += a_pend.eq(0)
            with m.Elif(i_last):                # group done: the mask restarts for the next group
                m.d.sync += [a_mask.eq(a.x), a_cnt.eq(a.cnt), a_any.eq(a.any), a_two.eq(a.two),
                             a_three.eq(a.three), a_g.eq(a_g + 1), a_g0.eq(0), a_gleft.eq(a_gleft - 1),
                             a_glast.eq(a_gleft == 1),
                             a_first.eq(1), i_last.eq(one_left(a.any, a.two))]
            with m.Else():                      # the selected chunk loses its lowest spike
                m.d.sync += a_first.eq(0)
                any_next = Cat(*(Mux(sel[c], a_two[c], a_any[c]) for c in range(K)))
                two_next = Cat(*(Mux(sel[c], a_three[c], a_two[c]) for c in range(K)))
                m.d.sync += i_last.eq(one_left(any_next, two_next))
                for c, (lo, hi) in enumerate(chunks):
                    mc = a_mask[lo:hi]
                    with m.If(sel[c]):
                        m.d.sync += [a_mask[lo:hi].eq(mc & (mc - 1)), a_cnt[c].eq(a_cnt[c] - 1),
                                     a_any[c].eq(a_two[c]), a_two[c].eq(a_three[c]),
                                     a_three[c].eq(a_cnt[c][2:].any())]

        if QD == 0:                             # taken only while S0 is empty (cmd.ready = ~a_pend)
            with m.If(take):
                m.d.sync += a_pend.eq(1)
                load_entry(new)

        # ---- S1: index within the chunk ------------------------------------------------------------
        ffs_any, ffs_idx = find_first_set(s1_word)
        idx = Signal(range(CM))
        m.d.comb += idx.eq(Mux(ffs_any, s1_cidx * W + ffs_idx, 0))
        with m.If(~stall):
            m.d.sync += [s2[n].eq(s1[n]) for n in s1]
            m.d.sync += [s2_idx.eq(idx), s2_g.eq(s1_g), s2_skip.eq(s1_skip), s2_bg.eq(s1_base + s1_g),
                         s2_groups.eq(s1_groups)]

        # ---- S2: row address into a register ------------------------------------------------------
        s3_addr = Signal.like(rd.addr)         # < R for every step a valid CONFIG admits
        with m.If(~stall):
            m.d.sync += [s3[n].eq(s2[n]) for n in s2]
            m.d.sync += [s3_g.eq(s2_g), s3_skip.eq(s2_skip), s3_addr.eq(s2_bg + s2_idx * s2_groups)]

        # ---- S3: synchronous read from the address register ----------------------------------------
        m.d.comb += [rd.addr.eq(s3_addr), rd.en.eq(~stall)]
        with m.If(~stall):
            m.d.sync += [s4[n].eq(s3[n]) for n in s3]
            m.d.sync += [s4_g.eq(s3_g), s4_skip.eq(s3_skip)]

        # ---- S4: the row into a register (zero for a step without an add) ---------------------------
        s5_row = Signal(data.ArrayLayout(signed(8), P))
        with m.If(~stall):
            m.d.sync += [s5[n].eq(s4[n]) for n in s4]
            m.d.sync += [s5_g.eq(s4_g), s5_skip.eq(s4_skip)]
            m.d.sync += [s5_row[lane].eq(Mux(s4["nz"], rd.data[lane], 0)) for lane in range(P)]

        # ---- S5: accumulate ---------------------------------------------------------------------
        nxt = Signal(data.ArrayLayout(signed(AW), P))
        for lane in range(P):
            m.d.comb += nxt[lane].eq(Mux(s5["first"], 0, acc[lane]) + s5_row[lane])
        with m.If(s5["valid"] & ~s5["last"] & ~stall):
            m.d.sync += acc.eq(nxt)

        beat = Signal.like(self.out.payload)
        m.d.comb += [beat.data.eq(nxt), beat.group.eq(s5_g), beat.last.eq(s5["tlast"]), beat.skip.eq(s5_skip)]
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
        emit_next = Mux(stall, emit, s4["valid"] & s4["last"])
        skid_next = Mux(self.out.ready | ~self.out.valid, 0, skid_valid | new_beat)
        m.d.sync += stall.eq(emit_next & skid_next)

        # ---- status and counters ------------------------------------------------------------------
        st = self.status
        m.d.comb += [
            st.error.eq(cmd_err | w_err),
            st.error_code.eq(error_code),
            st.busy.eq((f_count != 0) | a_pend | s1["valid"] | s2["valid"] | s3["valid"] | s4["valid"]
                       | s5["valid"] | self.out.valid | skid_valid),
        ]
        ev = self.events
        m.d.comb += [
            ev.busy.eq(~stall & a_pend),
            ev.starved.eq(~stall & ~a_pend),
            ev.blocked.eq(stall),
            ev.acc_ops.eq(Mux(step & a.nz, P, 0)),
            ev.spikes.eq(step & a.nz & a_g0),
        ]
        counters = [st.busy_cycles, st.starved_cycles, st.blocked_cycles, st.spikes, st.acc_ops]
        with m.If(self.counters_clear):
            m.d.sync += [c.eq(0) for c in counters]
        with m.Else():
            m.d.sync += [c.eq(c + e) for c, e in zip(counters, (ev.busy, ev.starved, ev.blocked, ev.spikes,
                                                                 ev.acc_ops), strict=True)]
        return m
