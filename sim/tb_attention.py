"""cocotb testbench of ``rtl.attention.AttentionEngine`` (``docs/attention_engine.md``).

* **Driver**: :class:`~sim.streams.StreamSource` on ``cmd`` (random idle cycles),
  :class:`~sim.streams.StreamSink` on ``out`` (random backpressure, stream-rule checks).
* **Monitor -> reference model**: a :class:`~sim.streams.StreamMonitor` on ``cmd`` hands every
  command the engine *accepted* to :class:`EngineModel`, which implements the command semantics of
  the interface page (windows, error codes, broken windows) with the arithmetic of
  ``golden_model.intops.attention_kv`` / ``attention_readout`` and the cycle model
  ``golden_model.perf.attention_cycles_from_popcounts``.
* **Scoreboard**: each output beat is compared with ``==`` to the next expected beat; status
  (``error``, ``error_code``) and the counters ``busy_cycles``, ``spikes``, ``acc_ops`` are compared
  exactly whenever the engine is drained; ``busy + starved + blocked`` equals the cycles since the
  counter clear, ``starved`` and ``blocked`` are bounded by the cycles the source was idle / the sink
  stalled.

The configuration (``dim_max``, ``lanes``, ``max_tokens``, ``heads``) comes from the pytest wrapper
(:func:`sim.verilator.tb_params`); ``SPIKEVID_TB_TRACES`` names a ``.pt`` file of real windows
(:mod:`sim.traces`).
"""

from __future__ import annotations

import os
import random
from collections import deque

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, RisingEdge

from driver.attention import bits, decode_readout, encode_window
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
from sim.attention_model import EngineModel, port_wait_cycles
from sim.streams import ClockLoop, StreamMonitor, StreamSink, StreamSource, payload_layout, random_pauses, value_int
from sim.verilator import tb_params

PARAMS = tb_params()
TRACES_ENV = "SPIKEVID_TB_TRACES"
MODES = {"dot": 0, "hamming": 1}
TEST_TIMEOUT_MS = 400  # simulated time limit of each cocotb test (10 ns clock: 40 M cycles)


def spikes(rng: torch.Generator, n: int, dim: int, density: float) -> torch.Tensor:
    """``(n, dim)`` int8 spikes, each 1 with probability ``density`` (0 and 1 exact)."""
    if density <= 0:
        return torch.zeros(n, dim, dtype=torch.int8)
    if density >= 1:
        return torch.ones(n, dim, dtype=torch.int8)
    return (torch.rand(n, dim, generator=rng) < density).to(torch.int8)


# --------------------------------------------------------------------------------------------
# Environment: clock, reset, driver, monitor, sink, model, scoreboard
# --------------------------------------------------------------------------------------------


class Env:
    def __init__(self, dut, seed: int, *, idle: float = 0.2, backpressure: float = 0.3,
                 idle_burst: int = 4, bp_burst: int = 8):
        self.dut = dut
        self.seed = seed
        self.rng = random.Random(seed)
        self.trng = torch.Generator().manual_seed(seed)
        eng = AttentionEngine(**PARAMS)
        self.D, self.P, self.N, self.H = eng.dim_max, eng.lanes, eng.max_tokens, eng.heads
        self.out_w = eng.out_w
        self.cmd_layout = payload_layout(eng, "cmd")
        self.out_layout = payload_layout(eng, "out")
        self.model = EngineModel(self.D, self.P, self.N, self.H)
        self.expected: deque = deque()
        self.mismatches: list[str] = []
        self.beats_checked = 0
        self.received: list[dict] | None = None  # every beat when a list (set by a test)
        self._idle = (idle, idle_burst)
        self._bp = (backpressure, bp_burst)

    async def start(self) -> Env:
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.rst.value = 1
        dut.counters_clear.value = 0
        dut.cmd__valid.value = 0
        dut.out__ready.value = 0
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        self.loop = ClockLoop(dut.clk)
        self.src = StreamSource(dut, "cmd", self.cmd_layout, self.loop)
        self.mon = StreamMonitor(dut, "cmd", self.cmd_layout, self.loop)
        self.sink = StreamSink(dut, "out", self.out_layout, self.loop, keep=False)
        self.pauses(*self._idle, *self._bp)
        self.mon.add_callback(self._on_cmd)
        self.sink.add_callback(self._on_beat)
        self.probe = _Probe(self)
        self.loop.add(self.probe)
        await RisingEdge(dut.clk)
        return self

    def pauses(self, idle: float, idle_burst: int, backpressure: float, bp_burst: int) -> None:
        """New random idle / backpressure generators (seeded from the test seed)."""
        s = self.rng.randrange(1 << 30)
        self.src.set_pauses(random_pauses(s, idle, burst=idle_burst))
        self.sink.set_pauses(random_pauses(s + 1, backpressure, burst=bp_burst))

    # ---- model and scoreboard, called from the clock loop --------------------------------
    def _on_cmd(self, cmd: dict) -> None:
        self.expected.extend(self.model.command(cmd))

    def _on_beat(self, beat: dict) -> None:
        self.beats_checked += 1
        if self.received is not None:
            self.received.append(beat)
        if not self.expected:
            self.mismatches.append(f"unexpected beat #{self.beats_checked}: {beat}")
            return
        want, ctx = self.expected.popleft()
        if beat != want:
            diff = [(i, g, w) for i, (g, w) in enumerate(zip(beat["data"], want["data"], strict=True)) if g != w]
            self.mismatches.append(f"{ctx}: got {beat if not diff else 'lanes (lane, got, want) ' + str(diff[:8])}"
                                   f" group {beat['group']}/{want['group']} last {beat['last']}/{want['last']}")

    # ---- commands -------------------------------------------------------------------------
    def config(self, mode: str | int, head: int, dim: int, tokens: int) -> None:
        m = MODES[mode] if isinstance(mode, str) else mode
        self.src.send_nowait({"op": OP_CONFIG, "mode": m, "head": head, "dim": dim, "tokens": tokens})

    def kv(self, k, v) -> None:
        self.src.send_nowait({"op": OP_KV, "a": k if isinstance(k, int) else bits(k),
                              "b": v if isinstance(v, int) else bits(v)})

    def v_pair(self, v0: int, v1: int) -> None:
        self.src.send_nowait({"op": OP_KV, "mode": 1, "a": v0, "b": v1})

    def q(self, q, skip: int = 0) -> None:
        self.src.send_nowait({"op": OP_Q, "a": q if isinstance(q, int) else bits(q), "skip": skip})

    def const_request(self) -> None:
        self.src.send_nowait({"op": OP_Q, "mode": 1})

    def status_clear(self) -> None:
        self.src.send_nowait({"op": OP_STATUS_CLEAR})

    def window(self, mode: str, head: int, k: torch.Tensor, v: torch.Tensor, q: torch.Tensor, *,
               compact: bool = False) -> None:
        """One window's commands (``driver.attention.encode_window``): plain, or compacted."""
        for c in encode_window(k, v, q, mode, head=head, compact=compact):
            self.src.send_nowait(c)

    # ---- status -------------------------------------------------------------------------------
    def status(self) -> dict:
        return {name: value_int(getattr(self.dut, f"status__{name}")) for name in
                ("error", "error_code", "busy", "busy_cycles", "starved_cycles", "blocked_cycles",
                 "spikes", "acc_ops")}

    async def clear_counters(self) -> None:
        """Pulse ``counters_clear`` (engine idle) and restart the model's counters."""
        await self.drain()
        await self.probe.clear()
        self.model.clear_counters()

    async def drain(self, stuck_cycles: int | None = None) -> None:
        """Wait until every command is accepted, every expected beat arrived and the engine is idle.

        Fails when nothing moves (no command accepted, no beat delivered) for ``stuck_cycles``
        (default: far above the longest command, ``D_MAX * G_MAX`` steps, and the longest stall).
        """
        if stuck_cycles is None:
            stuck_cycles = 4 * self.D * (self.D // self.P) + 3000
        quiet = still = 0
        progress = (self.src.transfers, self.sink.transfers)
        while still < stuck_cycles:
            if self.src.pending() or self.expected:  # Python-side state first: no signal reads
                quiet = 0
                await ClockCycles(self.dut.clk, 16)
                now = (self.src.transfers, self.sink.transfers)
                still = still + 16 if now == progress else 0
                progress = now
                continue
            await RisingEdge(self.dut.clk)
            still += 1
            idle = not value_int(self.dut.status__busy) and not value_int(self.dut.out__valid)
            quiet = quiet + 1 if idle else 0
            if quiet >= 3:
                return
        raise AssertionError(
            f"engine stuck for {still} cycles: {self.src.pending()} commands not accepted, "
            f"{len(self.expected)} expected beats missing (next: {self.expected[0][1] if self.expected else '-'}),"
            f" status {self.status()}; mismatches so far: {self.mismatches[:5]}")

    async def check(self, what: str = "", *, counters: bool = True) -> dict:
        """Drain, then compare beats, status and counters with the model exactly."""
        await self.drain()
        st, cycles = await self.probe.snapshot()
        assert not self.sink.protocol_errors, self.sink.protocol_errors[:5]
        assert not self.mismatches, f"{what}: {len(self.mismatches)} beat mismatches:\n" + "\n".join(
            self.mismatches[:12])
        assert (st["error"], st["error_code"]) == (self.model.error, self.model.error_code), \
            f"{what}: status error/code {st['error']}/{st['error_code']}, model {self.model.error}/" \
            f"{self.model.error_code}"
        if counters:
            got = {k: st[k] for k in ("busy_cycles", "spikes", "acc_ops")}
            want = {"busy_cycles": self.model.busy_cycles, "spikes": self.model.spikes,
                    "acc_ops": self.model.acc_ops}
            assert got == want, f"{what}: counters {got}, golden_model.perf {want}"
            total = st["busy_cycles"] + st["starved_cycles"] + st["blocked_cycles"]
            assert total == cycles, f"{what}: busy+starved+blocked = {total}, cycles since clear {cycles}"
            stalls, idles = self.probe.sink_stall_cycles, self.probe.src_idle_cycles
            fresh = self.probe.src_fresh_cycles
            assert st["blocked_cycles"] <= stalls, f"{what}: blocked {st['blocked_cycles']} > sink stalls {stalls}"
            assert st["starved_cycles"] <= idles + fresh, \
                f"{what}: starved {st['starved_cycles']} > source idle cycles {idles} + first cycles {fresh}"
        return st


class _Probe:
    """Clock-loop endpoint: pulses ``counters_clear``, snapshots the status, counts marks.

    Everything happens at clock edges inside the loop, so cycle numbers are exact: the clear is
    sampled at edge ``c1`` (``clear_cycle``); a snapshot at edge ``c`` reads the counters' values
    just before ``c``, which count the cycles ending at edges ``c1 + 1 .. c - 1``: ``c - c1 - 1``
    cycles. ``src_idle_cycles`` (``cmd.valid = 0``), ``src_fresh_cycles`` (a command's first cycle
    at the port, which the engine does not take) and ``sink_stall_cycles`` (``out.valid &
    ~out.ready``) count the same cycles.
    """

    NAMES = ("error", "error_code", "busy", "busy_cycles", "starved_cycles", "blocked_cycles", "spikes", "acc_ops")

    def __init__(self, env: Env):
        self.env = env
        dut = env.dut
        self.cv, self.ov, self.orr, self.clr = dut.cmd__valid, dut.out__valid, dut.out__ready, dut.counters_clear
        self.cr = dut.cmd__ready
        self._waiting = False   # the command at the port was there, not taken, in the cycle before
        self.status = [(n, getattr(dut, f"status__{n}")) for n in self.NAMES]
        self.clear_cycle = 0
        self.src_idle_cycles = self.src_fresh_cycles = self.sink_stall_cycles = 0
        self._clear = 0   # 1: drive clear at the next drive, 2: clear driven, sampled at the next edge
        self._snap: tuple[Event, list] | None = None
        self._clear_done: Event | None = None

    async def clear(self) -> None:
        self._clear = 1
        self._clear_done = Event()
        await self._clear_done.wait()

    async def snapshot(self) -> tuple[dict, int]:
        """Status values just before the next edge and the cycles counted since the clear."""
        ev, box = Event(), []
        self._snap = (ev, box)
        await ev.wait()
        return box[0], box[1]

    def _sample(self) -> None:
        cycle = self.env.loop.cycle
        if self._snap is not None:
            ev, box = self._snap
            self._snap = None
            box += [{n: value_int(h) for n, h in self.status}, cycle - self.clear_cycle - 1]
            ev.set()
        if self._clear == 2:
            self._clear = 0
            self.clear_cycle = cycle
            self.src_idle_cycles = self.src_fresh_cycles = self.sink_stall_cycles = 0
            self.clr.value = 0
            self._clear_done.set()
            return
        valid, ready = bool(self.cv.value), bool(self.cr.value)
        if not valid:
            self.src_idle_cycles += 1
        elif not self._waiting:
            self.src_fresh_cycles += 1
        self._waiting = valid and not ready
        if self.ov.value and not self.orr.value:
            self.sink_stall_cycles += 1

    def _drive(self) -> None:
        if self._clear == 1:
            self.clr.value = 1
            self._clear = 2


async def new_env(dut, seed: int, **kw) -> Env:
    env = await Env(dut, seed, **kw).start()
    await env.clear_counters()
    return env


def random_pause_levels(rng: random.Random) -> tuple[float, int, float, int]:
    return rng.choice((0.0, 0.1, 0.3, 0.6)), rng.randint(1, 6), rng.choice((0.0, 0.2, 0.5, 0.8)), rng.randint(1, 12)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_densities(dut):
    """Random spike tensors at densities 0, 1 %, 10 %, 50 %, 100 %, dot and Hamming, dim = D_MAX."""
    env = await new_env(dut, 11)
    n = min(env.N, 24 if env.D <= 16 else 48)
    for mode in ("dot", "hamming"):
        for density in (0.0, 0.01, 0.1, 0.5, 1.0):
            env.pauses(*random_pause_levels(env.rng))
            k, v, q = (spikes(env.trng, rows, env.D, density) for rows in (n, n, 6))
            q[0] = 1 - q[0]  # one query of the opposite density
            env.window(mode, env.rng.randrange(env.H), k, v, q)
            await env.check(f"{mode} density {density}")
    assert env.beats_checked > 0


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_dims(dut):
    """dim < D_MAX (partial last lane group, zero lanes beyond dim) and dim = 1 .. D_MAX."""
    env = await new_env(dut, 12)
    dims = sorted({1, 2, env.P - 1, env.P, env.P + 1, env.D // 2 + 1, env.D - 1, env.D} & set(range(1, env.D + 1)))
    for i, dim in enumerate(dims):
        env.pauses(*random_pause_levels(env.rng))
        mode = ("dot", "hamming")[i % 2]
        n = env.rng.randint(1, min(env.N, 12))
        k, v, q = (spikes(env.trng, rows, dim, 0.3) for rows in (n, n, 4))
        env.window(mode, env.rng.randrange(env.H), k, v, q)
        env.window(("dot", "hamming")[1 - i % 2], env.rng.randrange(env.H), k, v, q)
        await env.check(f"dim {dim}")
    # one-hot k on rows 0/1, dim <= P (one lane group): token after token updates the same row
    # slice back to back (read-after-write through the KV memory's transparent read port)
    dim = min(env.P, env.D)
    n = min(env.N, 24)
    for mode in ("dot", "hamming"):
        env.pauses(*random_pause_levels(env.rng))
        k = torch.zeros(n, dim, dtype=torch.int8)
        for r in range(n):
            k[r, env.rng.randrange(min(2, dim))] = 1
        v, q = spikes(env.trng, n, dim, 0.5), spikes(env.trng, 3, dim, 0.5)
        env.window(mode, 0, k, v, q)
        await env.check(f"same row back to back, {mode}")


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_heads(dut):
    """Every head in turn, a head re-used with fewer active rows (stale counts must not leak)."""
    env = await new_env(dut, 13)
    n = min(env.N, 10)
    order = list(range(env.H)) + list(range(env.H - 1, -1, -1))
    for i, head in enumerate(order):
        env.pauses(*random_pause_levels(env.rng))
        density = 0.8 if i < env.H else 0.15  # the second pass touches fewer rows than the first
        k, v, q = (spikes(env.trng, rows, env.D, density) for rows in (n, n, 3))
        env.window(("dot", "hamming")[i % 2], head, k, v, q)
    await env.check("heads")
    # back to back: a new CONFIG right after a window, no drain in between
    for head in range(env.H):
        k, v, q = (spikes(env.trng, rows, env.D, 0.5) for rows in (n, n, 2))
        env.window("hamming", head, k, v, q)
    await env.check("heads back to back")


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_extremes(dut):
    """All-ones windows with tokens = N_MAX: KV = s_V = N_MAX, |o| = D_MAX * N_MAX (both signs)."""
    env = await new_env(dut, 14, idle=0.02, backpressure=0.3)
    ones = (1 << env.D) - 1
    # both modes where the window is short; the long realistic window (D_MAX * N_MAX steps) in
    # Hamming mode only, which reaches both +D*N and -D*N (SPIKEVID_TB_FULL=1: both modes)
    both = env.D * env.N * (env.D // env.P) <= 64 * 1024 or os.environ.get("SPIKEVID_TB_FULL") == "1"
    for mode in ("hamming", "dot") if both else ("hamming",):
        env.config(mode, env.H - 1, env.D, env.N)
        for _ in range(env.N):
            env.kv(ones, ones)
        for q in (ones, 0, ones & 0x5555_5555_5555_5555, 1):
            env.q(q)
        await env.check(f"all ones {mode} N_MAX={env.N}")
        assert int(env.model.counts[0].max()) == env.N and int(env.model.counts[1].max()) == env.N
    lim = env.D * env.N
    assert (env.model.o_min, env.model.o_max) == (-lim, lim), (env.model.o_min, env.model.o_max, lim)
    assert lim <= (1 << (env.out_w - 1)) - 1 < 2 * lim  # OUT_W is tight: the extremes use its top bit


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_traces(dut):
    """Real q/k/v windows of the shipped tiny models (every window that fits the configuration)."""
    path = os.environ.get(TRACES_ENV)
    assert path, f"{TRACES_ENV} not set"
    windows = torch.load(path, weights_only=False)
    env = await new_env(dut, 15)
    used = 0
    for i, w in enumerate(windows):
        n, dim = w["k"].shape
        if dim > env.D or n > env.N:
            continue
        assert torch.equal(intops.attention(w["q"], w["k"], w["v"], w["mode"]), w["counts"]), \
            f"trace {w['layer']} head {w['head']}: golden model differs from the traced counts"
        env.pauses(*random_pause_levels(env.rng))
        compact = bool(i % 2)  # alternate the plain and the compacted encodings
        if compact:
            await env.check("before a compact trace window")  # the previous window's beats are in
            env.received = []
        env.window(w["mode"], w["head"] % env.H, w["k"], w["v"], w["q"], compact=compact)
        if compact:
            await env.check(f"compact trace {w['layer']} t={w['t']} head {w['head']}")
            got = decode_readout(env.received, w["q"].shape[0], dim, env.P, w["mode"])
            env.received = None
            assert torch.equal(got, w["counts"]), f"trace {w['layer']} head {w['head']}: compact read-out differs"
        used += 1
        if i % 8 == 7:
            await env.check(f"trace windows up to {w['layer']} t={w['t']} head {w['head']}")
    await env.check("trace windows")
    dut._log.info("%d of %d trace windows run (%d beats)", used, len(windows), env.beats_checked)
    assert used > 0, "no trace window fits this configuration"


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_errors(dut):
    """Error cases: status set, later tokens dropped, then a valid window gives exact results."""
    env = await Env(dut, 16).start()  # no counter clear: check reset values first
    st = env.status()  # after reset: no error, idle, nothing counted but the starved cycles since reset
    starved = st.pop("starved_cycles")
    assert st == dict.fromkeys(st, 0) and starved <= 2, (st, starved)
    await env.clear_counters()
    n = min(env.N, 6)

    def good_window(mode="hamming", dim=None):
        dim = dim or env.D
        k, v, q = (spikes(env.trng, rows, dim, 0.4) for rows in (n, n, 3))
        env.window(mode, env.rng.randrange(env.H), k, v, q)

    async def case(what: str, code: int):
        env.pauses(*random_pause_levels(env.rng))
        await env.check(what)
        assert env.model.error_code == code, f"{what}: the model expects code {env.model.error_code}"
        # a dropped token after the error: no output, code unchanged
        env.q(1)
        env.kv(1, 1)
        await env.check(f"{what}: dropped tokens")
        good_window()
        await env.check(f"{what}: recovery")
        assert env.model.error == 0

    env.q(1)                                                  # Q before any CONFIG
    await case("Q before any CONFIG", ERR_NO_WINDOW)
    env.config("dot", 0, env.D, n)                            # ends early: Q after n-1 of n KV
    for r in spikes(env.trng, n - 1, env.D, 0.5):
        env.kv(r, r)
    env.q(3)
    await case("token stream ends early", ERR_COUNT if n > 1 else ERR_NO_WINDOW)
    env.config("dot", 0, env.D, n)                            # Q before any KV of the window
    env.q(1)
    await case("Q before any KV", ERR_NO_WINDOW)
    env.config("hamming", 0, env.D, 1)                        # one KV token too many
    env.kv(1, 1)
    env.kv(1, 1)
    await case("KV after the window's tokens", ERR_COUNT)
    if env.H < 256:
        env.config("dot", env.H, env.D, n)                    # head out of range
        await case("head out of range", ERR_HEAD)
        env.config("dot", 255, env.D, n)
        await case("head 255", ERR_HEAD)
    env.config("dot", 0, 0, n)                                # dim out of range
    await case("dim 0", ERR_DIM)
    env.config("dot", 0, env.D + 1, n)
    await case("dim D_MAX + 1", ERR_DIM)
    env.config("hamming", 0, env.D, 2)                        # a V pair with one token left
    env.kv(1, 1)
    env.v_pair(1, 2)
    await case("V pair past the window's tokens", ERR_COUNT)
    if env.D > 1:
        env.config("hamming", 0, env.D - 1, 4)                # a V pair's first v beyond dim
        env.v_pair(1 << (env.D - 1), 1)
        await case("V pair bit beyond dim", ERR_BITS)
    if env.N < 0xFFFF:
        env.config("dot", 0, env.D, env.N + 1)
        await case("tokens N_MAX + 1", ERR_DIM)
    if env.D > 1:
        env.config("dot", 0, env.D - 1, n)                    # spike at index >= dim
        env.kv(1 << (env.D - 1), 1)
        await case("k bit beyond dim", ERR_BITS)
        env.config("hamming", 0, env.D - 1, 1)
        env.kv(1, 1)
        env.q(1 << (env.D - 1))
        await case("q bit beyond dim", ERR_BITS)
    env.status_clear()                                        # STATUS_CLEAR closes the window
    env.kv(1, 1)
    await case("KV after STATUS_CLEAR", ERR_NO_WINDOW)
    if env.H > 1:
        env.config("dot", env.H, env.D, n)                    # an invalid CONFIG after an error
        env.config("dot", 0, 0, n)
        await case("two invalid CONFIGs", ERR_DIM)
    env.status_clear()
    await env.check("STATUS_CLEAR")
    assert env.status()["error"] == 0


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_compact(dut):
    """Compacted windows (dropped / paired empty KV tokens, skip counts, constant requests, empty
    windows): the beats decode (driver.attention.decode_readout) to intops.attention exactly."""
    env = await new_env(dut, 19)
    env.received = []
    n = min(env.N, 20)
    cases = []
    for mode in ("dot", "hamming"):
        for density in (0.0, 0.05, 0.2, 1.0):
            for dim in sorted({1, env.D // 2 + 1, env.D} & set(range(1, env.D + 1))):
                k, v, q = (spikes(env.trng, rows, dim, density) for rows in (n, n, 9))
                v = spikes(env.trng, n, dim, 0.5)  # v spikes on k-empty tokens enter s_V (Hamming)
                q[env.rng.randrange(9)] = 0
                cases.append((mode, density, k, v, q))
    for mode, density, k, v, q in cases:
        env.pauses(*random_pause_levels(env.rng))
        env.window(mode, env.rng.randrange(env.H), k, v, q, compact=True)
        start = len(env.received)
        await env.check(f"compact {mode} density {density} dim {k.shape[1]}")
        got = decode_readout(env.received[start:], q.shape[0], k.shape[1], env.P, mode)
        want = intops.attention(q, k, v, mode)
        assert torch.equal(got, want), f"compact {mode} density {density}: decoded read-out differs"
    # explicit empty windows: CONFIG with tokens = 0, then Q tokens at once
    for mode in ("dot", "hamming"):
        env.config(mode, 0, env.D, 0)
        env.q(1, skip=3)
        env.const_request()
        env.q(0)
        await env.check(f"empty {mode} window")


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_backpressure(dut):
    """Output-bound windows under long sink stalls: no beat lost or duplicated, blocked counted."""
    env = await new_env(dut, 17, idle=0.05, backpressure=0.2, bp_burst=200)
    n = min(env.N, 8)
    for mode in ("dot", "hamming"):
        k, v = (spikes(env.trng, n, env.D, 0.5) for _ in range(2))
        q = spikes(env.trng, 40, env.D, 0.02)  # sparse queries: one beat every G cycles
        env.window(mode, 0, k, v, q)
    st = await env.check("long stalls")
    assert st["blocked_cycles"] > 0, "output-bound run with stalls but no blocked cycle"
    # a sink that is never ready for a while: the engine must wait, then deliver everything
    env.pauses(0.0, 1, 1.0, 1)
    k, v = (spikes(env.trng, n, env.D, 0.5) for _ in range(2))
    env.window("hamming", 0, k, v, spikes(env.trng, 5, env.D, 0.3))
    await ClockCycles(dut.clk, 300)
    assert env.sink.transfers == env.beats_checked
    env.pauses(0.1, 3, 0.5, 4)
    await env.check("stall then release")


@cocotb.test(timeout_time=TEST_TIMEOUT_MS, timeout_unit="ms")
async def test_cycle_model(dut):
    """Back to back with a ready sink, a window takes busy + port waits + LATENCY cycles (golden_model.perf)."""
    env = await new_env(dut, 18, idle=0.0, backpressure=0.0)
    n = min(env.N, 16)
    for mode in ("dot", "hamming"):
        k, v, q = (spikes(env.trng, rows, env.D, 0.3) for rows in (n, n, 5))
        first, last = [], []
        env.mon.add_callback(lambda c, first=first: first.append(env.loop.cycle) if not first else None)
        env.sink.add_callback(lambda b, last=last: last.append(env.loop.cycle))
        busy0, n0 = env.model.busy_cycles, len(env.model.occupancy)
        env.window(mode, 0, k, v, q)
        st = await env.check(f"{mode} back to back")
        busy = env.model.busy_cycles - busy0
        wait = port_wait_cycles(env.model.occupancy[n0:])
        took = last[-1] - first[0] + 1  # cycles from the first command to the last beat, both included
        assert took == busy + wait + LATENCY, \
            f"{mode}: first command to last beat {took} cycles, busy {busy} + port waits {wait} + {LATENCY}"
        assert st["blocked_cycles"] == 0, st
    for mode in ("dot", "hamming"):  # compacted windows: perf.attention_cycles(..., compact=True)
        k, v, q = (spikes(env.trng, rows, env.D, 0.05) for rows in (n, n, 7))
        busy0 = env.model.busy_cycles
        env.window(mode, 0, k, v, q, compact=True)
        await env.check(f"{mode} compact back to back")
        want = perf.attention_cycles(k, v, q, env.D, env.P, mode, compact=True)["busy"]
        assert env.model.busy_cycles - busy0 == want, (env.model.busy_cycles - busy0, want)
    # the same with random idle / backpressure: busy cycles unchanged, stalls go to starved / blocked
    env.pauses(0.3, 4, 0.5, 6)
    k, v, q = (spikes(env.trng, rows, env.D, 0.3) for rows in (n, n, 5))
    env.window("dot", 0, k, v, q)
    await env.check("random gaps")
