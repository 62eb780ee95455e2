"""Spike-driven attention engine: KV count build and Q read-out for one head at a time.

Implements exactly ``golden_model.intops.attention_kv`` / ``attention_readout`` (``docs/numerics.md``)
with costs that follow the spike counts; ``docs/attention_engine.md`` is the prose contract
(interface, error codes, widths, cycle model) and ``golden_model.perf.attention_cycles`` the
executable cycle model.

Structure (issue stage A, memory read R, row register B, accumulate C, beat D, one output register):

* **A** (issue) takes a command from ``cmd`` when it has no step left to issue, validates it
  (error codes), and turns a KV or Q token into *steps*, one per cycle. A step names one row
  slice ``(row i, group g)`` of the KV memory (``P`` counters); ``i`` comes from a log-depth
  find-first-set over the token's remaining spike mask and the mask loses its lowest bit with
  ``mask & (mask - 1)``, so **no cycle is spent per zero**. KV tokens step row-major
  (``for i in active(k): for g < G``), Q tokens group-major (``for g < G: for i in active(q)``)
  so that one group's ``P`` accumulators finish, go to the output register and restart while the
  next group is accumulated. The acceptance cycle issues the token's first step.
* **R** (read) presents the step's registered address to the memory's synchronous read port (the
  address fans out to every block of the memory from a flip-flop), decides whether the row is valid
  in this window and takes the group's lane slices of ``s_V`` and ``negc``.
* **B** registers the row slice as read (zero if the row is not valid).
* **C** (accumulate) works from registers only. Build: ``KV[i][g] += v[g]`` written back. Two
  read-after-write distances exist: the step one behind read before C's write lands, so it takes
  C's result from the ``fwd`` register (``c_hit``); the step two behind read in the cycle of the
  write, and B takes that write's data from ``fwd`` too (``b_hit2``, a registered address compare:
  the memory needs no read-during-write logic, its read data is not used in that cycle).
  Read-out: ``kacc += KV[i][g]`` and (Hamming) ``cacc -= 2 s_V``, starting from 0 and ``negc = -sum_i A[i][g]``.
* **D** forms the beat from the accumulators: ``kacc`` (dot) or ``4 kacc + cacc`` (Hamming,
  ``= negc + sum_i 2 A[i][g]``), so no stage chains a read, an add and an accumulate.
* A new window does not clear the memory: a per-row *valid* bit (cleared by CONFIG, set when the
  window first writes the row's last group) makes never-written rows read as zero, so CONFIG costs
  two cycles: its transfer, which registers the payload and its checks, and the next non-stalled
  cycle, which applies it (window registers, error, the clears) from those registers, taking no
  command. CONFIG clears the valid bits and cancels the set of an old-window step still in B.
* The output has a register and a skid register; the pipeline stalls only when D must emit while the
  skid is full, so ``out.ready`` drives nothing but those two registers (no combinational path to
  ``cmd.ready``).
* Compacted token streams (``docs/attention_engine.md`` s. 1): a KV command with ``mode = 1`` is a
  *V pair* (two k-empty tokens, v in ``a`` and ``b``; 1 cycle, no steps); a Q token carries a
  ``skip`` count of elided constant tokens onto its beats; a Q command with ``mode = 1`` is a
  *constant request* (``G`` beats, ``const = 1``, the read-out of ``q = 0``); ``tokens = 0`` is an
  empty window.

The per-window V sums ``s_V[j]`` and the Hamming column term ``negc[j] = -sum_{i<dim} A[i][j]`` live
in registers (D_MAX each) and are updated once per KV token, one cycle after its acceptance:
``s_V += v`` and ``negc[j] += v_j * (dim - 2 popcount(k))``, because
``sum_{i<dim} A[i][j] = sum_n v_nj (2 popcount(k_n) - dim)``.
"""

from __future__ import annotations

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.counters import events_signature

__all__ = [
    "OP_CONFIG", "OP_KV", "OP_Q", "OP_STATUS_CLEAR", "MODE_DOT", "MODE_HAMMING",
    "ERR_NONE", "ERR_COUNT", "ERR_HEAD", "ERR_DIM", "ERR_NO_WINDOW", "ERR_BITS", "COUNTER_W", "LATENCY",
    "kv_width", "out_width", "cmd_layout", "out_layout", "status_signature", "AttentionEngine",
    "popcount", "two_or_more", "find_first_set",
]

OP_CONFIG, OP_KV, OP_Q, OP_STATUS_CLEAR = 0, 1, 2, 3
MODE_DOT, MODE_HAMMING = 0, 1
ERR_NONE, ERR_COUNT, ERR_HEAD, ERR_DIM, ERR_NO_WINDOW, ERR_BITS = 0, 1, 2, 3, 4, 5
COUNTER_W = 32
LATENCY = 5   # a Q token's last step issued -> its last beat in the output register (A, R, B, C, D)

# window states
_W_NONE, _W_OPEN, _W_FULL, _W_BROKEN = 0, 1, 2, 3


def kv_width(max_tokens: int) -> int:
    """Bits of an unsigned KV / s_V counter: ``0 <= KV[i][j] <= s_V[j] <= N <= N_MAX``."""
    return max(1, max_tokens.bit_length())


def out_width(dim_max: int, max_tokens: int) -> int:
    """Bits of a signed read-out value: ``|o| <= D_MAX * N_MAX`` (``docs/attention_engine.md`` s. 4).

    Dot: ``0 <= o_j = sum_{i in q} KV[i][j] <= D * N``. Hamming: ``o_j = sum_i (2 q_i - 1) A[i][j]``
    with ``|A[i][j]| = |2 KV - s_V| <= N`` (as ``0 <= KV <= s_V <= N``), so ``|o_j| <= D * N``; the
    bound is reached (``q = k = v = 1``). One sign bit above ``bit_length(D_MAX * N_MAX)``.
    """
    return (dim_max * max_tokens).bit_length() + 1


def cmd_layout(dim_max: int) -> data.StructLayout:
    """Command payload: ``op`` 0 CONFIG / 1 KV / 2 Q / 3 STATUS_CLEAR; see the module docs."""
    return data.StructLayout({
        "op": 2, "mode": 1, "head": 8, "dim": 7, "tokens": 16, "skip": 16,
        "a": dim_max, "b": dim_max,
    })


def out_layout(dim_max: int, lanes: int, max_tokens: int) -> data.StructLayout:
    """Output beat: ``P`` signed read-out lanes, the column group, the token's last-beat flag, the
    token's ``skip`` count (constant tokens elided before it), ``const`` (a window-constant beat)
    and the ``head`` of the window it belongs to."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(out_width(dim_max, max_tokens)), lanes),
        "group": range(dim_max // lanes),
        "last": 1,
        "skip": 16,
        "const": 1,
        "head": 8,
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


def _count4(bits: list[Value]) -> Value:
    """Set bits among at most 4 one-bit values, as 3 bits of plain logic (one LUT4 each on an FPGA: no
    carry chain, which a ``+`` of single bits would map to)."""
    b = bits + [C(0, 1)] * (4 - len(bits))
    pairs = [b[i] & b[j] for i in range(4) for j in range(i + 1, 4)]
    full = b[0] & b[1] & b[2] & b[3]
    return Cat(b[0] ^ b[1] ^ b[2] ^ b[3], Cat(*pairs).any() & ~full, full)


def popcount(bits: Value) -> Value:
    """Number of set bits: groups of 4 bits counted in logic (:func:`_count4`), then a balanced adder
    tree over the group counts (width grows by one bit per level)."""
    bits = Value.cast(bits)
    if len(bits) == 0:
        return C(0, 1)
    terms: list[Value] = [_count4([bits[j] for j in range(i, min(i + 4, len(bits)))])
                          for i in range(0, len(bits), 4)]
    while len(terms) > 1:
        nxt = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
    return terms[0]


def two_or_more(bits: Value) -> Value:
    """Whether two or more bits are set, as a log-depth tree of (any, two) pairs (no carry chain: the
    same as ``bits & (bits - 1) != 0``)."""
    bits = Value.cast(bits)
    terms = [(bits[i], C(0, 1)) for i in range(len(bits))]
    if not terms:
        return C(0, 1)
    while len(terms) > 1:
        pairs = zip(terms[0::2], terms[1::2], strict=False)
        terms = [(a0 | a1, t0 | t1 | (a0 & a1)) for (a0, t0), (a1, t1) in pairs] + (
            [terms[-1]] if len(terms) % 2 else [])
    return terms[0][1]


def find_first_set(bits: Value) -> tuple[Value, Value]:
    """``(any, index)`` of the lowest set bit, as a log-depth tree (index meaningless if not any)."""
    bits = Value.cast(bits)
    n = max(2, 1 << (len(bits) - 1).bit_length())
    padded = Cat(bits, C(0, n - len(bits))) if n > len(bits) else bits

    def tree(v: Value) -> tuple[Value, Value]:
        if len(v) == 2:
            return v[0] | v[1], ~v[0]
        half = len(v) // 2
        lo_any, lo_idx = tree(v[:half])
        hi_any, hi_idx = tree(v[half:])
        return lo_any | hi_any, Cat(Mux(lo_any, lo_idx, hi_idx), ~lo_any)

    return tree(padded)


class AttentionEngine(wiring.Component):
    """KV count build and Q read-out for spike-driven attention, one head at a time.

    Parameters
    ----------
    dim_max : int
        D_MAX, the largest head dimension (1..64; ``dim`` is a 7-bit field).
    lanes : int
        P, parallel column lanes; must divide ``dim_max``. Default ``dim_max``.
    max_tokens : int
        N_MAX, the largest number of KV tokens in a window (1..65535; ``tokens`` is 16 bits).
    heads : int
        Heads whose KV counts the KV memory holds (``heads * D_MAX * D_MAX / P`` rows of ``P``
        counters); 1..256.

    Widths (proofs in :func:`kv_width`, :func:`out_width`): KV counters ``KV_W =
    bit_length(N_MAX)`` unsigned; read-out lanes, accumulators and ``negc`` ``OUT_W =
    bit_length(D_MAX * N_MAX) + 1`` signed. Every partial sum of the read-out is itself a sum
    ``sum_i +-A[i][j]`` over at most D distinct rows (Hamming: ``negc`` plus ``2 A`` for the rows
    done so far), or a partial dot sum, so it also obeys ``|.| <= D * N`` and never wraps.
    """

    def __init__(self, *, dim_max: int = 64, lanes: int | None = None, max_tokens: int = 4096, heads: int = 1):
        lanes = dim_max if lanes is None else lanes
        if not 1 <= dim_max <= 64:
            raise ValueError(f"dim_max must be in 1..64, got {dim_max}")
        if lanes < 1 or dim_max % lanes:
            raise ValueError(f"lanes must divide dim_max = {dim_max}, got {lanes}")
        if not 1 <= max_tokens <= 0xFFFF:
            raise ValueError(f"max_tokens must be in 1..65535, got {max_tokens}")
        if not 1 <= heads <= 256:
            raise ValueError(f"heads must be in 1..256, got {heads}")
        self.dim_max = dim_max
        self.lanes = lanes
        self.max_tokens = max_tokens
        self.heads = heads
        self.groups = dim_max // lanes
        self.kv_w = kv_width(max_tokens)
        self.out_w = out_width(dim_max, max_tokens)
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout(dim_max))),
            "out": Out(stream.Signature(out_layout(dim_max, lanes, max_tokens))),
            "status": Out(status_signature()),
            "events": Out(events_signature(dim_max, lanes)),
            "counters_clear": In(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        D, P, GM, NH = self.dim_max, self.lanes, self.groups, self.heads
        KV_W, OUT_W = self.kv_w, self.out_w

        m.submodules.kv_mem = kv_mem = Memory(
            shape=data.ArrayLayout(unsigned(KV_W), P), depth=NH * D * GM, init=[])
        wr = kv_mem.write_port()
        rd = kv_mem.read_port()                # (no transparency: B forwards the write of R's cycle, b_hit2)

        cmd = self.cmd.payload

        def group_slice(vec: Value, g: Value) -> Value:
            return Value.cast(vec)[:P] if GM == 1 else Value.cast(vec).word_select(g, P)

        # ---- window registers -------------------------------------------------------------
        w_state = Signal(2, init=_W_NONE)
        w_head = Signal(range(NH))
        w_mode = Signal(1)
        w_dim = Signal(range(D + 1))
        w_lowmask = Signal(D)                  # bit j: j < w_dim
        w_glast = Signal(range(GM))            # G - 1
        w_tokens = Signal(range(self.max_tokens + 1))
        w_kv = Signal(range(self.max_tokens + 1))
        w_one_left = Signal(1)                 # w_kv + 1 == w_tokens (a V pair would overfill the window)
        error = Signal(1)
        error_code = Signal(4)

        s_v = Signal(data.ArrayLayout(unsigned(KV_W), D))
        negc = Signal(data.ArrayLayout(signed(OUT_W), D))
        row_valid = Signal(D)

        # ---- issue stage A ----------------------------------------------------------------
        a_pend = Signal(1)                     # steps of an accepted token left to issue
        a_read = Signal(1)                     # 0: KV build, 1: Q read-out
        a_mask = Signal(D)
        a_q = Signal(D)
        a_v = Signal(D)
        a_g = Signal(range(GM))
        a_first = Signal(1)
        a_nz = Signal(1)
        a_skip = Signal(16)
        a_const = Signal(1)

        # ---- a step's record, registered in R (the memory read), B (the row arrives) and C -----------
        step = data.StructLayout({
            "valid": 1, "read": 1, "addr": len(rd.addr), "i": range(D), "g": range(GM), "vs": P,
            "setvalid": 1, "first": 1, "last": 1, "tlast": 1, "nz": 1, "mode": 1, "skip": 16, "const": 1,
            "head": range(NH),
        })
        r = Signal(step)
        b = Signal(step)
        c = Signal(step)
        b_row_ok = Signal(1)                   # row b.i is valid in this window (decided in R)
        set_en = Signal(1)                     # row set_i's valid bit is set in this cycle
        set_i = Signal(range(D))
        b_sv = Signal(data.ArrayLayout(unsigned(KV_W), P))      # s_V of group b.g (taken in R)
        b_negc = Signal(data.ArrayLayout(signed(OUT_W), P))     # negc of group b.g

        # ---- stage C (write-back, accumulate) and stage D (beat) --------------------------------
        c_hit = Signal(1)                      # C's row slice is the one the step before it writes
        b_hit2 = Signal(1)                     # B's row slice was written in the cycle of its read (in fwd)
        c_old = Signal(data.ArrayLayout(unsigned(KV_W), P))     # the row slice as read (0 if not valid)
        c_sv = Signal(data.ArrayLayout(unsigned(KV_W), P))      # s_V of group c.g
        c_negc = Signal(data.ArrayLayout(signed(OUT_W), P))     # negc of group c.g
        fwd = Signal(data.ArrayLayout(unsigned(KV_W), P))       # the last write-back
        # read-out accumulators: kacc = sum KV[i][g] over the group's rows so far (<= D * N), cacc =
        # negc - 2 s_V per row so far (-3 D N <= cacc <= D N); the beat is kacc (dot) or
        # 4 kacc + cacc = negc + sum (4 KV - 2 s_V) (Hamming), which fits OUT_W
        kacc = Signal(data.ArrayLayout(unsigned(OUT_W - 1), P))
        cacc = Signal(data.ArrayLayout(signed(OUT_W + 2), P))
        d_emit = Signal(1)
        d_mode = Signal(1)
        d_g = Signal(range(GM))
        d_tlast = Signal(1)
        d_skip = Signal(16)
        d_const = Signal(1)
        d_head = Signal(range(NH))

        # output register (out.valid / out.payload) plus one skid register: the pipeline stalls only
        # when D must emit while the skid is full, so no combinational path runs from out.ready to
        # cmd.ready or the pipeline. `stall` (= d_emit & skid_valid) is itself a register, set from the
        # two registers' next values (below), so every enable in the engine starts at one flip-flop
        skid_valid = Signal(1)
        skid = Signal.like(self.out.payload)
        emit = Signal(1)
        stall = Signal(1)
        m.d.comb += emit.eq(d_emit)

        # ---- command decode ---------------------------------------------------------------
        # A command is taken in its second cycle at the port at the earliest (hold: valid and not taken a
        # cycle before, so the payload is the same, streams hold it until the transfer). What A needs of
        # the payload is registered in every cycle (the p_* features below), so the checks and the first
        # step of the command taken start at flip-flops beside the engine, not at the command port.
        # A CONFIG takes two cycles: its transfer (the payload and its checks go into the cfg_*
        # registers) and the next non-stalled cycle, which applies it from those registers (cfg_pend,
        # no command taken meanwhile). The window's registers, its error and the clears of the valid
        # bits, s_V and negc thus start at flip-flops, not at the command port.
        take = Signal(1)
        hold = Signal(1)
        cfg_pend = Signal(1)
        cfg_apply = Signal(1)
        m.d.comb += [
            self.cmd.ready.eq(~a_pend & ~stall & ~cfg_pend & hold),
            take.eq(self.cmd.valid & self.cmd.ready),
            cfg_apply.eq(cfg_pend & ~stall),
        ]
        m.d.sync += hold.eq(self.cmd.valid & ~take)
        cfg_head_bad, cfg_dim_bad = Signal(1), Signal(1)
        cfg_head, cfg_mode, cfg_dim = Signal(range(NH)), Signal(1), Signal(range(D + 1))
        cfg_tokens = Signal(range(self.max_tokens + 1))
        cfg_one, cfg_empty = Signal(1), Signal(1)
        cfg_glast = Signal(range(GM))
        cfg_lowmask = Signal(D)                # bit j: j < dim (the bits a bitmap may have set)
        with m.If(~cfg_pend):                  # the payload of every cycle until a CONFIG is taken
            m.d.sync += [
                cfg_lowmask.eq(Cat(*(cmd.dim > j for j in range(D)))),
                cfg_head_bad.eq(cmd.head >= NH),
                cfg_dim_bad.eq((cmd.dim == 0) | (cmd.dim > D) | (cmd.tokens > self.max_tokens)),
                cfg_head.eq(cmd.head), cfg_mode.eq(cmd.mode), cfg_dim.eq(cmd.dim), cfg_tokens.eq(cmd.tokens),
                cfg_one.eq(cmd.tokens == 1), cfg_empty.eq(cmd.tokens == 0),
            ]
            with m.Switch(cmd.dim):
                for d in range(1, D + 1):
                    with m.Case(d):
                        m.d.sync += cfg_glast.eq((d - 1) // P)
        accept_kv = Signal(1)
        accept_q = Signal(1)
        pair = Signal(1)                       # KV with mode 1: two k-empty tokens, v = a and v = b
        const_q = Signal(1)                    # Q with mode 1: the window-constant beats
        m.d.comb += [pair.eq((cmd.op == OP_KV) & cmd.mode), const_q.eq((cmd.op == OP_Q) & cmd.mode)]
        raise_err = Signal(1)
        err_code_new = Signal(4)
        cfg_ok = Signal(1)
        # the payload's features, registered every cycle: the op and its kind (p_op, p_pair, p_const), a's
        # popcount (as two halves' counts: their sum is formed at the take), whether a bitmap has a bit at
        # or above dim (an error), and A's first step of a KV / Q token (p_eff = a_eff: the mask it walks,
        # 0 for a constant request or a V pair; its find-first-set index, the mask without that bit, and
        # whether that step is the token's last in its group); the command taken is the one registered (hold)
        half = (D + 1) // 2
        p_pc_lo, p_pc_hi = Signal(range(half + 1)), Signal(range(D - half + 1))   # a's popcount, in two halves
        p_high_a, p_high_b = Signal(1), Signal(1)
        p_eff, p_rest = Signal(D), Signal(D)
        p_nz, p_ilast = Signal(1), Signal(1)
        p_idx = Signal(range(D))
        p_op, p_pair, p_const = Signal(2), Signal(1), Signal(1)
        no_k = const_q | pair                  # a constant request reads q = 0; a pair has k = 0 (a_eff = 0)
        e_any, e_idx = find_first_set(cmd.a)
        # the dim a command taken in the next cycle is checked against, as a mask of the bits below it: the
        # window's, or while a CONFIG waits for its apply cycle the one it brings (nothing is taken before
        # that cycle, and after a failed CONFIG the window is broken: its commands are dropped unchecked)
        lowmask_eff = Mux(cfg_pend, cfg_lowmask, w_lowmask)
        m.d.sync += [p_pc_lo.eq(popcount(cmd.a[:half])), p_pc_hi.eq(popcount(cmd.a[half:])),
                     p_high_a.eq((cmd.a & ~lowmask_eff).any()), p_high_b.eq((cmd.b & ~lowmask_eff).any()),
                     p_eff.eq(Mux(no_k, 0, cmd.a)), p_rest.eq(Mux(no_k, 0, cmd.a & (cmd.a - 1))),
                     p_nz.eq(e_any & ~no_k), p_ilast.eq(no_k | ~two_or_more(cmd.a)),
                     p_idx.eq(Mux(e_any & ~no_k, e_idx, 0)),
                     p_op.eq(cmd.op), p_pair.eq(pair), p_const.eq(const_q)]
        high_a, high_b = p_high_a, p_high_b
        with m.If(take & (p_op == OP_CONFIG)):
            m.d.sync += cfg_pend.eq(1)
        with m.If(cfg_apply):
            m.d.sync += cfg_pend.eq(0)

        with m.If(cfg_apply):
            with m.If(cfg_head_bad):
                m.d.comb += [raise_err.eq(1), err_code_new.eq(ERR_HEAD)]
            with m.Elif(cfg_dim_bad):
                m.d.comb += [raise_err.eq(1), err_code_new.eq(ERR_DIM)]
            with m.Else():
                m.d.comb += cfg_ok.eq(1)
        with m.If(take):
            with m.Switch(p_op):
                with m.Case(OP_KV):
                    with m.Switch(w_state):
                        with m.Case(_W_NONE):
                            m.d.comb += [raise_err.eq(1), err_code_new.eq(ERR_NO_WINDOW)]
                        with m.Case(_W_FULL):
                            m.d.comb += [raise_err.eq(1), err_code_new.eq(ERR_COUNT)]
                        with m.Case(_W_OPEN):
                            with m.If(high_a | high_b):
                                m.d.comb += [raise_err.eq(1), err_code_new.eq(ERR_BITS)]
                            with m.Elif(p_pair & w_one_left):
                                m.d.comb += [raise_err.eq(1), err_code_new.eq(ERR_COUNT)]
                            with m.Else():
                                m.d.comb += accept_kv.eq(1)
                with m.Case(OP_Q):
                    with m.Switch(w_state):
                        with m.Case(_W_NONE):
                            m.d.comb += [raise_err.eq(1), err_code_new.eq(ERR_NO_WINDOW)]
                        with m.Case(_W_OPEN):
                            m.d.comb += raise_err.eq(1)
                            m.d.comb += err_code_new.eq(Mux(w_kv == 0, ERR_NO_WINDOW, ERR_COUNT))
                        with m.Case(_W_FULL):
                            with m.If(high_a & ~p_const):
                                m.d.comb += [raise_err.eq(1), err_code_new.eq(ERR_BITS)]
                            with m.Else():
                                m.d.comb += accept_q.eq(1)

        # window state updates
        with m.If(raise_err):
            m.d.sync += [error.eq(1), error_code.eq(err_code_new), w_state.eq(_W_BROKEN)]
        with m.If(cfg_ok):
            m.d.sync += [
                error.eq(0), error_code.eq(ERR_NONE), w_state.eq(_W_OPEN),
                w_head.eq(cfg_head), w_mode.eq(cfg_mode), w_dim.eq(cfg_dim), w_tokens.eq(cfg_tokens),
                w_kv.eq(0), w_one_left.eq(cfg_one), w_glast.eq(cfg_glast), w_lowmask.eq(cfg_lowmask),
            ]
            with m.If(cfg_empty):  # an empty window is complete at once (KV = 0, s_V = 0)
                m.d.sync += w_state.eq(_W_FULL)
        with m.If(take & (p_op == OP_STATUS_CLEAR)):
            m.d.sync += [error.eq(0), error_code.eq(ERR_NONE), w_state.eq(_W_NONE)]
        with m.If(accept_kv):
            m.d.sync += [w_kv.eq(w_kv + 1 + p_pair), w_one_left.eq(w_kv + 2 + p_pair == w_tokens)]
            with m.If(w_kv + 1 + p_pair == w_tokens):
                m.d.sync += w_state.eq(_W_FULL)
        # s_V / negc take a KV token's update one cycle after its acceptance (registered: the popcount is
        # off the acceptance path); a read-out of the window reads them from stage B on, which is at least
        # one cycle later still (the first Q command is taken after the last KV command)
        # (the coefficients are registered with the token, so the 64 lane adders start at flip-flops)
        u_valid = Signal(1)
        u_pair = Signal(1)
        u_a = Signal(D)
        u_b = Signal(D)
        u_pc = Signal(range(D + 1))            # popcount(a)
        u_coef = Signal(signed(8))             # dim - 2 popcount(k): dim for a k-empty token
        u_coef2 = Signal(signed(9))            # a pair with both v_j set adds the coefficient twice
        p_pc = p_pc_lo + p_pc_hi
        m.d.sync += [u_valid.eq(accept_kv), u_pair.eq(p_pair), u_a.eq(cmd.a), u_b.eq(cmd.b), u_pc.eq(p_pc),
                     u_coef.eq(Mux(p_pair, w_dim, w_dim - 2 * p_pc)), u_coef2.eq(w_dim * 2)]
        with m.If(u_valid):
            for j in range(D):
                va = u_pair & u_a[j]           # the pair's first v
                vb = u_b[j]
                m.d.sync += [
                    s_v[j].eq(s_v[j] + Cat(vb ^ va, vb & va)),
                    negc[j].eq(negc[j] + Mux(vb & va, u_coef2, Mux(vb | va, u_coef, 0))),
                ]

        # a valid CONFIG clears s_V, negc and the row-valid bits one cycle after its apply cycle (cfg_clr, a
        # register): the old window's last update and sets land before, the new window's first ones after
        cfg_clr = Signal(1)
        m.d.sync += cfg_clr.eq(cfg_ok)
        with m.If(cfg_clr):                    # after the delayed update: a new window starts from 0
            m.d.sync += [s_v.eq(0), negc.eq(0)]

        # ---- step generation --------------------------------------------------------------
        cur_q = Signal(D)
        cur_v = Signal(D)
        cur_g = Signal(range(GM))
        cur_first = Signal(1)
        cur_read = Signal(1)
        cur_nz = Signal(1)
        cur_skip = Signal(16)
        cur_const = Signal(1)
        issue = Signal(1)
        with m.If(a_pend):
            m.d.comb += [
                cur_q.eq(a_q), cur_v.eq(a_v), cur_g.eq(a_g),
                cur_first.eq(a_first), cur_read.eq(a_read), cur_nz.eq(a_nz),
                cur_skip.eq(a_skip), cur_const.eq(a_const),
                issue.eq(~stall),
            ]
        with m.Else():                         # the command's first step, from the p_* features
            m.d.comb += [
                cur_q.eq(p_eff), cur_v.eq(cmd.b), cur_g.eq(0),
                cur_first.eq(1), cur_read.eq(accept_q), cur_nz.eq(p_nz),
                cur_skip.eq(Mux(p_const, 0, cmd.skip)), cur_const.eq(p_const),
                issue.eq(accept_q | (accept_kv & p_nz)),
            ]

        ffs_any, ffs_idx = find_first_set(a_mask)
        a_rest = a_mask & (a_mask - 1)
        idx = Signal(range(D))
        m.d.comb += idx.eq(Mux(a_pend, Mux(ffs_any, ffs_idx, 0), p_idx))
        g_last = Signal(1)
        m.d.comb += g_last.eq(cur_g == w_glast)
        i_last = Signal(1)
        a_two = two_or_more(a_mask)            # a_rest != 0, without the carry chain of a_mask - 1
        m.d.comb += i_last.eq(Mux(a_pend, ~a_nz | ~a_two, p_ilast))
        addr = Signal.like(rd.addr)
        m.d.comb += addr.eq((w_head * D + idx) * GM + cur_g)

        with m.If(~stall):
            m.d.sync += [
                r.valid.eq(issue), r.read.eq(cur_read), r.addr.eq(addr), r.i.eq(idx), r.g.eq(cur_g),
                r.vs.eq(group_slice(cur_v, cur_g)), r.setvalid.eq(g_last), r.first.eq(cur_first),
                r.last.eq(i_last), r.tlast.eq(i_last & g_last), r.nz.eq(cur_nz), r.mode.eq(w_mode),
                r.skip.eq(cur_skip), r.const.eq(cur_const), r.head.eq(w_head),
            ]

        def walk_next(pend: bool):
            """A's next (mask, group, first, pend) after a step of its entry (``pend``) or of the command's
            first step (the p_* features): a read walks the mask bit by bit and moves to the next group
            after its last bit; a KV step walks the groups, then the next bit."""
            if pend:
                read, last, glast, more = a_read, ~a_nz | ~a_two, a_g == w_glast, a_two
                q, mask, rst, g, iss = a_q, a_mask, a_rest, a_g, ~stall
            else:
                read, last, glast, more = accept_q, p_ilast, w_glast == 0, p_rest.any()
                q, mask, rst, g, iss = p_eff, p_eff, p_rest, C(0, 1), accept_q | (accept_kv & p_nz)
            return (Mux(read, Mux(last, q, rst), Mux(glast, rst, mask)),
                    Mux(read, Mux(last, g + 1, g), Mux(glast, 0, g + 1)),
                    Mux(read, last, a_first),
                    Mux(read, Mux(last, iss & ~glast, iss), Mux(glast, iss & more, iss)))
        # the issue registers follow cur_* in every non-stalled cycle (with A empty, the command port: only
        # a_pend says whether it issued), so their enable is ~stall, not the command's acceptance; A's walk
        # registers take one of two candidates, each from its own registers: a_pend (every bit's select) last
        with m.If(~stall):
            m.d.sync += [a_q.eq(cur_q), a_v.eq(cur_v), a_read.eq(cur_read), a_nz.eq(cur_nz),
                         a_skip.eq(cur_skip), a_const.eq(cur_const)]
            for reg, on_a, on_p in zip((a_mask, a_g, a_first, a_pend), walk_next(True), walk_next(False),
                                       strict=True):
                m.d.sync += reg.eq(Mux(a_pend, on_a, on_p))

        # ---- stages R and B: the memory read from a registered address; forwarding decisions --------
        # A step reads its row slice in R and writes it back in C, two cycles later. When a step is in B,
        # C holds the step issued one cycle before: that write-back lands in this cycle, after the read,
        # so a B step on the same row slice takes C's result (c_hit -> fwd). The step two ahead wrote in
        # the cycle of the read: B takes that write from fwd, which holds it then (b_hit2, registered in
        # R from the two registered addresses); older writes are in the memory. R decides whether its row
        # is valid in this window from the valid bits plus the pending sets of B and C, and takes the
        # group's s_V / negc slices, both before a CONFIG applied in the same cycle clears them; a CONFIG
        # cancels the sets of old-window steps in R and B.
        b_build = Signal(1)
        c_build = Signal(1)
        m.d.comb += [b_build.eq(b.valid & ~b.read), c_build.eq(c.valid & ~c.read)]
        m.d.comb += [rd.addr.eq(r.addr), rd.en.eq(~stall)]
        with m.If(~stall):
            m.d.sync += [
                b.eq(r), b.setvalid.eq(r.setvalid & ~cfg_ok),
                b_row_ok.eq(row_valid.bit_select(r.i, 1) | (b_build & b.setvalid & (b.i == r.i))
                            | (c_build & c.setvalid & (c.i == r.i)) | (set_en & (set_i == r.i))),
                c.eq(b), c.setvalid.eq(b.setvalid & ~cfg_ok), c_hit.eq(c_build & (b.addr == c.addr)),
                b_hit2.eq(c_build & (r.addr == c.addr)),
                c_sv.eq(b_sv), c_negc.eq(b_negc),
            ]
            for lane in range(P):
                m.d.sync += [
                    b_sv[lane].eq(Array(s_v[g * P + lane] for g in range(GM))[r.g]),
                    b_negc[lane].eq(Array(negc[g * P + lane] for g in range(GM))[r.g]),
                    c_old[lane].eq(Mux(b_row_ok, Mux(b_hit2, fwd[lane], rd.data[lane]), 0)),
                ]

        # ---- stage C: build write-back and read-out accumulate ------------------------------
        old = [Mux(c_hit, fwd[lane], c_old[lane]) for lane in range(P)]
        new_row = Signal(data.ArrayLayout(unsigned(KV_W), P))
        for lane in range(P):
            m.d.comb += new_row[lane].eq(old[lane] + c.vs[lane])
        m.d.comb += [wr.addr.eq(c.addr), wr.data.eq(new_row), wr.en.eq(c_build & ~stall)]
        # a finished row's valid bit is set one cycle after its write-back, from registers (set_en /
        # set_i: R counts that pending set too); a CONFIG applied in the write-back's cycle cancels it
        with m.If(~stall):
            m.d.sync += fwd.eq(new_row)
        m.d.sync += [set_en.eq(c_build & c.setvalid & ~stall & ~cfg_ok), set_i.eq(c.i)]
        with m.If(set_en):
            m.d.sync += row_valid.bit_select(set_i, 1).eq(1)
        with m.If(cfg_clr):  # after the set above: a new window wins over the old window's last write
            m.d.sync += row_valid.eq(0)

        with m.If(c.valid & c.read & ~stall):
            for lane in range(P):
                m.d.sync += [
                    kacc[lane].eq(Mux(c.first, 0, kacc[lane]) + Mux(c.nz, old[lane], 0)),
                    cacc[lane].eq(Mux(c.first, c_negc[lane], cacc[lane]) - Mux(c.nz, c_sv[lane] * 2, 0)),
                ]
        with m.If(~stall):
            m.d.sync += [
                d_emit.eq(c.valid & c.read & c.last), d_mode.eq(c.mode), d_g.eq(c.g), d_tlast.eq(c.tlast),
                d_skip.eq(c.skip), d_const.eq(c.const), d_head.eq(c.head),
            ]

        # ---- stage D: a finished group's beat (dot: sum KV; Hamming: 4 sum KV + cacc) ---------
        beat = Signal.like(self.out.payload)
        for lane in range(P):
            m.d.comb += beat.data[lane].eq(Mux(d_mode, kacc[lane] * 4 + cacc[lane], kacc[lane]))
        m.d.comb += [beat.group.eq(d_g), beat.last.eq(d_tlast), beat.skip.eq(d_skip),
                     beat.const.eq(d_const), beat.head.eq(d_head)]
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
        d_emit_next = Mux(stall, d_emit, c.valid & c.read & c.last)
        skid_next = Mux(self.out.ready | ~self.out.valid, 0, skid_valid | new_beat)
        m.d.sync += stall.eq(d_emit_next & skid_next)

        # ---- status and counters ----------------------------------------------------------
        st = self.status
        m.d.comb += [
            st.error.eq(error),
            st.error_code.eq(error_code),
            st.busy.eq(a_pend | cfg_pend | r.valid | b.valid | c.valid | d_emit | self.out.valid | skid_valid),
        ]
        counters = [st.busy_cycles, st.starved_cycles, st.blocked_cycles, st.spikes, st.acc_ops]
        s_valid = Signal(1)                    # spikes: popcount(k) / popcount(q) one cycle after acceptance
        m.d.sync += s_valid.eq(((accept_kv & ~p_pair) | (accept_q & ~p_const)) & ~self.counters_clear)
        ev = self.events
        m.d.comb += [
            ev.busy.eq(~stall & (a_pend | take | cfg_pend)),
            ev.starved.eq(~stall & ~a_pend & ~cfg_pend & ~take),     # (a command's first cycle at the port too)
            ev.blocked.eq(stall),
            ev.acc_ops.eq(Mux(issue & cur_nz, P, 0)),
            ev.spikes.eq(Mux(s_valid, u_pc, 0)),
        ]
        with m.If(self.counters_clear):
            m.d.sync += [c.eq(0) for c in counters]
        with m.Else():
            m.d.sync += [c.eq(c + e) for c, e in zip(counters, (ev.busy, ev.starved, ev.blocked, ev.spikes,
                                                                 ev.acc_ops), strict=True)]
        return m
