"""Per-layer accelerator cycles and link bytes of a compiled program, without running the protocol.

:func:`model_program` runs the integer model's own forward pass (host ops and offloaded layers alike
computed by the golden integer layers) and, at every offloaded layer, evaluates the closed-form
cycle models of :mod:`golden_model.perf` on the layer's actual input spikes under exactly the
schedule :func:`driver.run.run` would send: the program's weight tiles and split fan-ins, the
frames :class:`driver.protocol.Device` cuts the tokens into (``max_payload``), LIF channel and
membrane tiles, and the compact attention command streams with their frame splits (every frame
rebuilds the window's KV state). No emulator, no frames, no bytes are produced; per layer it gives
the counters the device would report (``COUNTER_NAMES`` subset below) and the link bytes of the
layer's frames.

Counters (equal, layer by layer, to the emulator's and the RTL's, ``tests/test_bench.py``):

* LINEAR frame of ``n`` tokens, ``G = ceil(c_out / P)``: ``golden_model.perf.spike_accum_cycles`` of its
  tokens (``linear_busy = 1 + sum G * max(1, |x|)``, ``linear_spikes = sum |x|``, ``linear_acc_ops =
  P * G * sum |x|``), ``requant_lif_busy += n * G``;
* LIF frame: ``requant_lif_busy += n * ceil(channels / P)``;
* ATTENTION frame: ``attention_busy += 2 + build(KV commands) + readout(its Q commands)``
  (``perf.attention_cycles_from_popcounts``), ``attention_spikes += sum |k| + sum |q|`` over the
  frame's commands, ``attention_acc_ops = P_A * G * spikes``, ``requant_lif_busy += records * G`` with
  the attention engine's ``P_A = min(P, att_dim_max)`` lanes and ``G = ceil(dim / P_A)``.

Link bytes: ``bytes_in`` / ``bytes_out`` count the layer's request and response frames (weights,
parameters, LIF parameters, the op frames); the two COUNTERS requests :func:`driver.run.run` wraps
around every layer call to read the deltas are *not* included (:data:`COUNTERS_OVERHEAD` gives
their share of the measured deltas).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from driver.program import LayerPlan, Program, with_planned_layers
from driver.protocol import (
    ATTENTION_HEADER,
    COUNTERS_FORMAT,
    FRAME_OVERHEAD,
    LIF_HEADER,
    LINEAR_HEADER,
    PARAM_DTYPE,
    PARAMS_HEADER,
    RECORD_HEADER,
    WEIGHTS_HEADER,
    WRITE_LIF_FORMAT,
    nbytes_bits,
)
from golden_model.intlayers import NULL_TRACER, Requant, Tracer
from golden_model.perf import attention_cycles_from_popcounts, compact_popcounts, spike_accum_cycles

__all__ = ["ModelledLayer", "ModelledRun", "model_program", "COUNTER_KEYS", "COUNTERS_OVERHEAD", "SKIP_MAX",
           "linear_op_counters"]

SKIP_MAX = 0xFFFF
COUNTER_KEYS = ("linear_busy", "linear_spikes", "linear_acc_ops", "attention_busy", "attention_spikes",
                "attention_acc_ops", "requant_lif_busy")
# per layer call, driver.run reads COUNTERS before and after: the measured byte deltas include the
# second request (in) and the first response (out)
COUNTERS_OVERHEAD = {"bytes_in": FRAME_OVERHEAD, "bytes_out": FRAME_OVERHEAD + 1 + COUNTERS_FORMAT.size}
_RESP = FRAME_OVERHEAD + 1  # a response frame: header, status byte, CRC


@dataclass
class ModelledLayer:
    """One offloaded layer: the modelled counters (keys of :data:`COUNTER_KEYS`, ``bytes_in``, ``bytes_out``)."""

    name: str
    kind: str
    calls: int = 0
    in_spikes: int = 0
    sops: int = 0
    out_spikes: int = 0
    frames: int = 0
    long_frames: int = 0      # attention windows modelled as one over-long frame (``long_attention_frames``)
    counters: dict = field(default_factory=dict)

    @property
    def cycles(self) -> int:
        """Busy cycles of the layer's engine (as :attr:`driver.run.LayerStats.cycles`)."""
        engine = {"linear": "linear_busy", "conv": "linear_busy", "attention": "attention_busy"}.get(self.kind)
        return self.counters.get(engine or "requant_lif_busy", 0)

    def add(self, **kw: int) -> None:
        for k, v in kw.items():
            self.counters[k] = self.counters.get(k, 0) + int(v)


@dataclass
class ModelledRun:
    logits: torch.Tensor
    layers: list[ModelledLayer]
    lanes: int
    inputs: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)  # first-call inputs of ``capture``

    def totals(self) -> dict:
        keys = sorted({k for s in self.layers for k in s.counters})
        return {k: sum(s.counters.get(k, 0) for s in self.layers) for k in keys} | {
            "sops": sum(s.sops for s in self.layers), "in_spikes": sum(s.in_spikes for s in self.layers),
            "cycles": sum(s.cycles for s in self.layers)}


# ------------------------------------------------------------------------------------------------
# byte sizes of the frames the driver sends (driver.protocol.Device)


def _weights_bytes(rows: int, info) -> tuple[int, int]:
    per = (info.max_payload - WEIGHTS_HEADER.size) // info.lanes
    frames = -(-rows // per)
    return frames * (FRAME_OVERHEAD + WEIGHTS_HEADER.size) + rows * info.lanes, frames * _RESP


def _params_bytes(n: int, info) -> tuple[int, int]:
    per = (info.max_payload - PARAMS_HEADER.size) // PARAM_DTYPE.itemsize
    frames = -(-n // per)
    return frames * (FRAME_OVERHEAD + PARAMS_HEADER.size) + n * PARAM_DTYPE.itemsize, frames * _RESP


class _Ctx:
    def __init__(self, program: Program, capture: set[str], long_frames: bool = False):
        self.long_frames = long_frames
        self.program = program
        self.info = program.info
        self.stats: dict[str, ModelledLayer] = {}
        self.capture = capture
        self.inputs: dict[str, tuple[torch.Tensor, ...]] = {}

    def stat(self, plan: LayerPlan, *inputs: torch.Tensor) -> ModelledLayer:
        st = self.stats.setdefault(plan.name, ModelledLayer(plan.name, plan.kind))
        st.calls += 1
        if plan.name in self.capture and plan.name not in self.inputs:
            self.inputs[plan.name] = tuple(x.clone() for x in inputs)
        return st


def _linear_frames(st: ModelledLayer, pc: torch.Tensor, c_in: int, c_out: int, out_bits: int, info) -> None:
    """``Device.linear`` of tokens with popcounts ``pc`` (1-D) on ``c_in`` inputs and ``c_out`` outputs: one
    LINEAR frame per ``per`` tokens, each costing :func:`golden_model.perf.spike_accum_cycles` of its tokens."""
    tokens = pc.numel()
    if tokens == 0:
        return
    in_tok, out_tok = nbytes_bits(c_in), c_out * out_bits // 8
    per = min((info.max_payload - LINEAR_HEADER.size) // in_tok, (info.max_payload - 1) // out_tok, 0xFFFF)
    pcs = pc.tolist()
    frames = 0
    for lo in range(0, tokens, per):
        cyc = spike_accum_cycles(pcs[lo:lo + per], c_out, info.lanes)
        st.add(linear_busy=cyc["busy"], linear_spikes=cyc["spikes"], linear_acc_ops=cyc["acc_ops"],
               requant_lif_busy=cyc["out_beats"])
        frames += 1
    st.frames += frames
    st.add(bytes_in=frames * (FRAME_OVERHEAD + LINEAR_HEADER.size) + tokens * in_tok,
           bytes_out=frames * _RESP + tokens * out_tok)


def linear_op_counters(popcounts: torch.Tensor, c_in: int, c_out: int, out_bits: int, info) -> dict[str, int]:
    """Counters and link bytes of one ``Device.linear`` call on tokens with these input popcounts."""
    st = ModelledLayer("op", "linear")
    _linear_frames(st, torch.as_tensor(popcounts, dtype=torch.int64).reshape(-1), c_in, c_out, out_bits, info)
    return dict(st.counters) | {"frames": st.frames}


def _linear_tiles(ctx: _Ctx, st: ModelledLayer, plan: LayerPlan, popcounts, rq: Requant) -> None:
    """``driver.run._linear_tokens``: ``popcounts(t, k_lo, k_hi)`` -> per-token popcounts of step ``t``."""
    info = ctx.info
    per_step_params = rq.m.shape[0] > 1
    split = any(tile.k_hi - tile.k_lo != plan.c_in for tile in plan.tiles)
    steps = popcounts.steps
    for i, tile in enumerate(plan.tiles):
        bi, bo = _weights_bytes(tile.rows.shape[0], info)
        st.add(bytes_in=bi, bytes_out=bo)
        n = tile.hi - tile.lo
        for t in range(steps):
            pc = popcounts(t, tile.k_lo, tile.k_hi)
            if split:
                if i == 0 and t == 0:
                    bi, bo = _params_bytes(min(plan.c_out, info.param_channels), info)
                    st.add(bytes_in=bi, bytes_out=bo)
                _linear_frames(st, pc, tile.k_hi - tile.k_lo, n, 32, info)
                continue
            if t == 0 or per_step_params:
                bi, bo = _params_bytes(n, info)
                st.add(bytes_in=bi, bytes_out=bo)
            _linear_frames(st, pc, plan.c_in, n, rq.out_bits, info)


class _TokenPopcounts:
    """Per-step popcounts of token rows over a fan-in range (cached per range)."""

    def __init__(self, steps: list[torch.Tensor]):
        self.rows = steps  # (tokens, K) int8 per step
        self.steps = len(steps)

    def __call__(self, t: int, k_lo: int, k_hi: int) -> torch.Tensor:
        return self.rows[t][:, k_lo:k_hi].sum(1, dtype=torch.int64)


class _PatchPopcounts:
    """Per-step popcounts of a convolution's spike patches over the fan-in ranges ``ranges`` of the
    ``(c, kh, kw)`` order, computed once per step (one unfold) and kept as one vector per range."""

    def __init__(self, x: torch.Tensor, kh: int, kw: int, stride: int, padding: int, ranges):
        self.x, self.k, self.stride, self.padding = x, (kh, kw), stride, padding
        self.ranges = sorted(set(ranges))
        self.steps = x.shape[0]
        self._pcs: dict[tuple[int, int, int], torch.Tensor] = {}

    def __call__(self, t: int, k_lo: int, k_hi: int) -> torch.Tensor:
        if (t, k_lo, k_hi) not in self._pcs:
            cols = F.unfold(self.x[t].float(), self.k, padding=self.padding, stride=self.stride)  # (B, K, L)
            cols = cols.transpose(1, 2).reshape(-1, cols.shape[1])
            for lo, hi in {*self.ranges, (k_lo, k_hi)}:
                self._pcs[(t, lo, hi)] = cols[:, lo:hi].sum(1, dtype=torch.float64).round().to(torch.int64)
        return self._pcs[(t, k_lo, k_hi)]


class _ModelLinear:
    def __init__(self, ctx: _Ctx, plan: LayerPlan):
        self.ctx, self.plan, self.layer = ctx, plan, plan.layer

    def __call__(self, x: torch.Tensor, tracer: Tracer = NULL_TRACER) -> torch.Tensor:
        layer, st = self.layer, self.ctx.stat(self.plan, x)
        steps = [x.reshape(-1, x.shape[-1])] if layer.layout == "flat" else [xt.reshape(-1, x.shape[-1]) for xt in x]
        spikes = int(x.sum(dtype=torch.int64))
        st.in_spikes += spikes
        st.sops += spikes * self.plan.c_out
        _linear_tiles(self.ctx, st, self.plan, _TokenPopcounts(steps), layer.rq)
        return layer(x, tracer)


class _ModelConv:
    def __init__(self, ctx: _Ctx, plan: LayerPlan):
        self.ctx, self.plan, self.layer = ctx, plan, plan.layer

    def __call__(self, x: torch.Tensor, tracer: Tracer = NULL_TRACER) -> torch.Tensor:
        layer, st = self.layer, self.ctx.stat(self.plan, x)
        kh, kw = layer.weight.shape[2:]
        pcs = _PatchPopcounts(x, kh, kw, layer.stride, layer.padding,
                              [(0, self.plan.c_in)] + [(tl.k_lo, tl.k_hi) for tl in self.plan.tiles])
        st.in_spikes += int(x.sum(dtype=torch.int64))
        st.sops += sum(int(pcs(t, 0, self.plan.c_in).sum()) for t in range(pcs.steps)) * self.plan.c_out
        _linear_tiles(self.ctx, st, self.plan, pcs, layer.rq)
        return layer(x, tracer)


class _ModelLIF:
    def __init__(self, ctx: _Ctx, plan: LayerPlan):
        self.ctx, self.plan, self.layer = ctx, plan, plan.layer

    def __call__(self, x: torch.Tensor, tracer: Tracer = NULL_TRACER) -> torch.Tensor:
        st, info = self.ctx.stat(self.plan, x), self.ctx.info
        steps = x.shape[0]
        ch = x.shape[2] if x.dim() == 5 else x.shape[-1]
        n = x[0].numel() // ch
        ch_tile = min(ch, max(info.lanes, (info.max_payload - 9) // 2 // info.lanes * info.lanes))
        per_tile = info.membrane_rows // -(-ch_tile // info.lanes)
        st.add(bytes_in=FRAME_OVERHEAD + WRITE_LIF_FORMAT.size, bytes_out=_RESP)
        for c_lo in range(0, ch, ch_tile):
            w = min(ch, c_lo + ch_tile) - c_lo
            per = min((info.max_payload - LIF_HEADER.size) // (2 * w), (info.max_payload - 1) // nbytes_bits(w),
                      0xFFFF)
            for lo in range(0, n, per_tile):
                tokens = min(n, lo + per_tile) - lo
                frames = steps * -(-tokens // per)
                st.frames += frames
                st.add(requant_lif_busy=steps * tokens * -(-w // info.lanes),
                       bytes_in=frames * (FRAME_OVERHEAD + LIF_HEADER.size) + steps * tokens * 2 * w,
                       bytes_out=frames * _RESP + steps * tokens * nbytes_bits(w))
        s = self.layer(x, tracer)
        st.out_spikes += int(s.sum(dtype=torch.int64))
        return s


def _attention_window(st: ModelledLayer, kp: list[int], qp: list[int], mode: str, dim: int, out_bits: int,
                      info, long_frames: bool = False) -> None:
    """One window's compact command stream (``driver.run._OffloadAttention``), cut into frames.

    A window whose KV commands do not fit one frame raises as the driver does, unless ``long_frames``:
    then the window is one frame (a protocol with a wider length field)."""
    lanes = min(info.lanes, info.att_dim_max)  # the attention engine's lanes (rtl.accelerator att_lanes)
    g, d = -(-dim // lanes), nbytes_bits(dim)
    c = compact_popcounts(kp, qp, mode)
    kv_cmds = len(c["k"]) + c["v_pairs"]
    kv_bytes = ATTENTION_HEADER.size + kv_cmds * (1 + 2 * d)
    q_size, record = 3 + d, RECORD_HEADER.size + dim * out_bits // 8
    # Q commands in order: the constant request (when a q-empty token exists), then the tokens with a
    # spike; a run of more than SKIP_MAX empty tokens costs an explicit empty token
    q_cmds: list[tuple[int, int]] = [(1, -1)] if any(x == 0 for x in qp) else []
    skip = 0
    for x in qp:
        if x == 0:
            skip += 1
            if skip > SKIP_MAX:
                q_cmds.append((q_size, 0))
                skip = 0
            continue
        q_cmds.append((q_size, x))
        skip = 0
    if kv_bytes + q_size > info.max_payload or 1 + record > info.max_payload:
        if not long_frames:
            raise ValueError(f"{st.name}: an attention window of dim {dim} needs {kv_bytes} bytes of KV commands: "
                             f"more than one frame (max_payload {info.max_payload})")
        q_cmds_frames = [q_cmds]
    else:
        q_cmds_frames = None
    frames: list[list[tuple[int, int]]] = []
    cur: list[tuple[int, int]] = []
    req, resp = kv_bytes, 1
    for size, pc in ([] if q_cmds_frames else q_cmds):
        if cur and (req + size > info.max_payload or resp + record > info.max_payload):
            frames.append(cur)
            cur, req, resp = [], kv_bytes, 1
        cur.append((size, pc))
        req += size
        resp += record
    frames.append(cur)
    if q_cmds_frames:
        frames = q_cmds_frames
        st.long_frames += 1
    for fr in frames:
        qs = [pc for _, pc in fr if pc >= 0]
        consts = len(fr) - len(qs)
        cyc = attention_cycles_from_popcounts(c["k"], qs, dim, lanes, v_pairs=c["v_pairs"], const_requests=consts)
        st.add(attention_busy=cyc["busy"], attention_spikes=cyc["spikes"], attention_acc_ops=cyc["acc_ops"],
               requant_lif_busy=len(fr) * g,
               bytes_in=FRAME_OVERHEAD + kv_bytes + sum(s for s, _ in fr),
               bytes_out=_RESP + len(fr) * record)
    st.frames += len(frames)


class _ModelAttention:
    def __init__(self, ctx: _Ctx, plan: LayerPlan):
        self.ctx, self.plan, self.layer = ctx, plan, plan.layer

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tracer: Tracer = NULL_TRACER) -> torch.Tensor:
        layer, info = self.layer, self.ctx.info
        st = self.ctx.stat(self.plan, q, k, v)
        t, b, n, c = q.shape
        h = layer.heads
        d = c // h
        qp = q.reshape(t, b, n, h, d).sum(-1, dtype=torch.int64)  # (T, B, N, H)
        kp = k.reshape(t, b, n, h, d).sum(-1, dtype=torch.int64)
        for ts in (range(t) if layer.window == "frame" else [None]):
            for hh in range(h):
                bi, bo = _params_bytes(d, info)
                st.add(bytes_in=bi, bytes_out=bo)
                for bb in range(b):
                    if ts is None:
                        kw, qw = kp[:, bb, :, hh].reshape(-1), qp[:, bb, :, hh].reshape(-1)
                    else:
                        kw, qw = kp[ts, bb, :, hh], qp[ts, bb, :, hh]
                    st.in_spikes += int(qw.sum() + kw.sum())
                    _attention_window(st, kw.tolist(), qw.tolist(), layer.mode, d, layer.rq.out_bits, info,
                                      self.ctx.long_frames)
        return layer(q, k, v, tracer)


_MODELS = {"linear": _ModelLinear, "conv": _ModelConv, "lif": _ModelLIF, "attention": _ModelAttention}


@torch.inference_mode()
def model_program(program: Program, clip: torch.Tensor, *, tracer: Tracer = NULL_TRACER,
                  capture: Iterable[str] = (), long_attention_frames: bool = False) -> ModelledRun:
    """The golden integer forward pass of ``clip`` (int8 ``(B, C, T, H, W)``) with, per offloaded layer,
    the device counters and link bytes :func:`driver.run.run` would measure on ``program.info``'s device.

    Layers run in the same order as on the device; ``logits`` are the golden model's. The inputs of the
    offloaded layers named in ``capture`` (first call) are kept in :attr:`ModelledRun.inputs`. An attention
    window whose KV commands exceed one frame raises ``ValueError`` as :func:`driver.run.run` does, unless
    ``long_attention_frames``: then it is modelled as one frame (counted in ``ModelledLayer.long_frames``)."""
    model = program.int_model
    model.check_int_clip(clip)
    ctx = _Ctx(program, set(capture), long_attention_frames)
    logits = with_planned_layers(model, ctx.program, lambda kind, plan: _MODELS[kind](ctx, plan)).forward(clip, tracer)
    return ModelledRun(logits, list(ctx.stats.values()), program.info.lanes, ctx.inputs)
