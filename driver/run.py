"""Run a compiled :class:`~driver.program.Program` on a clip through a device (any transport).

:func:`run` executes the integer model's own forward pass with every offloaded layer replaced by a
proxy that streams the layer's weights, parameters and spikes to the device (``docs/protocol.md``)
and reads the results back; host layers run the golden integer ops. So the logits equal the golden
model's exactly when the device is exact, and any difference is the device's.

Per offloaded layer the result records the device counters' deltas (busy cycles, spikes,
accumulate operations per engine), the frames and bytes on the link (the device's counters, and the
host's split by class: weights, parameters, activations, results, control; see
``driver.protocol.Device.link_bytes``), the input spikes and the layer's SOPs (``sum over input
spikes of the output channels they reach``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from driver.attention import decode_readout, encode_window
from driver.program import LayerPlan, Program, with_planned_layers
from driver.protocol import ATTENTION_HEADER, attention_command_bytes
from golden_model import intops
from golden_model.intlayers import NULL_TRACER, Requant, Tracer
from rtl.attention import OP_Q

__all__ = ["LayerStats", "RunResult", "run"]


@dataclass
class LayerStats:
    """What one offloaded layer cost on the device (counter deltas) and on the link."""

    name: str
    kind: str
    calls: int = 0
    in_spikes: int = 0
    sops: int = 0
    out_spikes: int = 0
    counters: dict = field(default_factory=dict)
    link: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def cycles(self) -> int:
        """Busy cycles of the layer's engine (linear / attention / requant-LIF, whichever ran)."""
        c = self.counters
        engine = {"linear": "linear_busy", "conv": "linear_busy", "attention": "attention_busy"}.get(self.kind)
        return c.get(engine, 0) if engine else c.get("requant_lif_busy", 0)


@dataclass
class RunResult:
    logits: torch.Tensor
    layers: list[LayerStats]
    seconds: float
    host_layers: list[str]

    def totals(self) -> dict:
        keys = sorted({k for s in self.layers for k in s.counters})
        return {k: sum(s.counters.get(k, 0) for s in self.layers) for k in keys} | {
            "sops": sum(s.sops for s in self.layers), "in_spikes": sum(s.in_spikes for s in self.layers)}


class _Ctx:
    """Shared state of one run: the device, the stats, the progress bar."""

    def __init__(self, device, program: Program, bar):
        self.device = device
        self.program = program
        self.info = program.info
        self.stats: dict[str, LayerStats] = {}
        self.bar = bar

    def begin(self, plan: LayerPlan) -> tuple[LayerStats, tuple[dict, dict], float]:
        st = self.stats.setdefault(plan.name, LayerStats(plan.name, plan.kind))
        counters = self.device.counters()
        return st, (counters, dict(self.device.link_bytes)), time.perf_counter()

    def end(self, st: LayerStats, before: tuple[dict, dict], t0: float) -> None:
        after = self.device.counters()
        for k, v in after.items():
            st.counters[k] = st.counters.get(k, 0) + ((v - before[0].get(k, 0)) & 0xFFFF_FFFF)
        for k, v in self.device.link_bytes.items():
            st.link[k] = st.link.get(k, 0) + v - before[1].get(k, 0)
        st.calls += 1
        st.seconds += time.perf_counter() - t0
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(st.name[-28:])


def _params_rows(rq: Requant, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    row = t if rq.m.shape[0] > 1 else 0
    return rq.m[row], rq.s[row], rq.b[row]


def _linear_tokens(ctx: _Ctx, plan: LayerPlan, x_steps: list[torch.Tensor], rq: Requant) -> list[torch.Tensor]:
    """Spike tokens per time step ``(tokens, K)`` -> requant outputs ``(tokens, C_out)`` per step.

    Tiles with the whole fan-in requantise on the device; a split fan-in returns raw partial sums
    (``out_bits = 32`` with ``M = 2, S = 1, B = 0``), added and requantised here.
    """
    dev = ctx.device
    outs = [torch.zeros(x.shape[0], plan.c_out, dtype=torch.int32) for x in x_steps]
    per_step_params = rq.m.shape[0] > 1
    split = any(tile.k_hi - tile.k_lo != plan.c_in for tile in plan.tiles)
    for i, tile in enumerate(plan.tiles):
        dev.write_weights(0, tile.rows)
        n = tile.hi - tile.lo
        for t, x in enumerate(x_steps):
            if split:
                if i == 0 and t == 0:
                    ones = torch.ones(min(plan.c_out, ctx.info.param_channels), dtype=torch.int64)
                    dev.write_params(0, 2 * ones, ones, 0 * ones)  # identity: the raw accumulator
                outs[t][:, tile.lo:tile.hi] += dev.linear(x[:, tile.k_lo:tile.k_hi].contiguous(), c_out=n, w_base=0,
                                                          p_base=0, out_bits=32)
                continue
            if t == 0 or per_step_params:
                m, s, b = _params_rows(rq, t)
                dev.write_params(0, m[tile.lo:tile.hi], s[tile.lo:tile.hi], b[tile.lo:tile.hi])
            outs[t][:, tile.lo:tile.hi] = dev.linear(x, c_out=n, w_base=0, p_base=0, out_bits=rq.out_bits)
    if split:
        for t in range(len(outs)):
            m, s, b = _params_rows(rq, t)
            outs[t] = intops.requant(outs[t], m.view(1, -1), s.view(1, -1), b.view(1, -1), rq.out_bits)
    return outs


class _OffloadLinear:
    def __init__(self, ctx: _Ctx, plan: LayerPlan):
        self.ctx, self.plan, self.layer = ctx, plan, plan.layer

    def __call__(self, x: torch.Tensor, tracer: Tracer = NULL_TRACER) -> torch.Tensor:
        layer = self.layer
        intops.check_spikes(f"{layer.name} input", x)
        st, before, t0 = self.ctx.begin(self.plan)
        if layer.layout == "flat":
            steps, lead = [x.reshape(-1, x.shape[-1])], x.shape[:-1]
        else:
            steps, lead = [xt.reshape(-1, x.shape[-1]) for xt in x], x.shape[1:-1]
        st.in_spikes += int(x.sum())
        st.sops += int(x.sum()) * self.plan.c_out
        outs = _linear_tokens(self.ctx, self.plan, steps, layer.rq)
        y = torch.stack([o.reshape(*lead, -1) for o in outs]) if layer.layout != "flat" else outs[0].reshape(*lead, -1)
        self.ctx.end(st, before, t0)
        y = y.to(torch.int8) if layer.rq.out_bits == 8 else y
        tracer.record(layer.name, "out", y)
        return y


class _OffloadConv:
    def __init__(self, ctx: _Ctx, plan: LayerPlan):
        self.ctx, self.plan, self.layer = ctx, plan, plan.layer

    def __call__(self, x: torch.Tensor, tracer: Tracer = NULL_TRACER) -> torch.Tensor:
        layer = self.layer
        intops.check_spikes(f"{layer.name} input", x)
        st, before, t0 = self.ctx.begin(self.plan)
        t, b, c, h, w = x.shape
        kh, kw = layer.weight.shape[2:]
        ho = (h + 2 * layer.padding - kh) // layer.stride + 1
        wo = (w + 2 * layer.padding - kw) // layer.stride + 1
        steps = []
        for xt in x:  # (B, C, H, W) -> patches (B * Ho * Wo, C * kh * kw), the weight's (c, kh, kw) order
            cols = F.unfold(xt.float(), (kh, kw), padding=layer.padding, stride=layer.stride)
            steps.append(cols.transpose(1, 2).reshape(-1, c * kh * kw).to(torch.int8))
        spikes = sum(int(s.sum()) for s in steps)
        st.in_spikes += int(x.sum())
        st.sops += spikes * self.plan.c_out
        outs = _linear_tokens(self.ctx, self.plan, steps, layer.rq)
        y = torch.stack([o.reshape(b, ho, wo, -1).permute(0, 3, 1, 2) for o in outs]).contiguous()
        self.ctx.end(st, before, t0)
        y = y.to(torch.int8) if layer.rq.out_bits == 8 else y
        tracer.record(layer.name, "out", y)
        return y


class _OffloadLIF:
    def __init__(self, ctx: _Ctx, plan: LayerPlan):
        self.ctx, self.plan, self.layer = ctx, plan, plan.layer

    def __call__(self, x: torch.Tensor, tracer: Tracer = NULL_TRACER) -> torch.Tensor:
        layer = self.layer
        if layer.bits != 16:
            raise ValueError(f"{layer.name}: the device's membranes are 16-bit, the layer uses {layer.bits}")
        st, before, t0 = self.ctx.begin(self.plan)
        dev, info = self.ctx.device, self.ctx.info
        chw = x.dim() == 5
        xs = x.permute(0, 1, 3, 4, 2) if chw else x          # channels last
        shape = xs.shape
        tokens = xs.reshape(shape[0], -1, shape[-1]).to(torch.int32)
        n, ch = tokens.shape[1:]
        # neurons are independent: tile channels (whole lane groups, one token per frame must fit)
        # and tokens (the membranes of a tile must fit), time steps innermost
        ch_tile = min(ch, max(info.lanes, (info.max_payload - 9) // 2 // info.lanes * info.lanes))
        per_tile = info.membrane_rows // -(-ch_tile // info.lanes)
        if per_tile < 1:
            raise ValueError(f"{layer.name}: {ch_tile} channels need more membrane rows than the device has")
        dev.write_lif(layer.leak, layer.shift, layer.theta)
        out = torch.empty(tokens.shape, dtype=torch.int8)
        for c_lo in range(0, ch, ch_tile):
            c_hi = min(ch, c_lo + ch_tile)
            for lo in range(0, n, per_tile):
                hi = min(n, lo + per_tile)
                for t in range(shape[0]):
                    out[t, lo:hi, c_lo:c_hi] = dev.lif(tokens[t, lo:hi, c_lo:c_hi].contiguous(), neuron=0,
                                                       first=t == 0)
        s = out.reshape(shape)
        s = s.permute(0, 1, 4, 2, 3).contiguous() if chw else s
        st.out_spikes += int(s.sum())
        self.ctx.end(st, before, t0)
        tracer.record(layer.name, "spikes", s)
        return s


def _attention_frames(body: list[dict], dim: int, out_bits: int, max_payload: int) -> list[list[dict]]:
    """Split a window's commands into frames that fit ``max_payload``: every frame repeats the KV
    commands (the window is rebuilt) and takes the next run of Q commands; records come back in order."""
    kv = [c for c in body if c["op"] != OP_Q]
    qs = [c for c in body if c["op"] == OP_Q]
    kv_bytes = ATTENTION_HEADER.size + sum(len(attention_command_bytes(c, dim)) for c in kv)
    record = 3 + dim * out_bits // 8
    if kv_bytes + len(attention_command_bytes({"op": OP_Q, "a": 0}, dim)) > max_payload or 1 + record > max_payload:
        raise ValueError(f"an attention window of dim {dim} needs {kv_bytes} bytes of KV commands: more than one "
                         f"frame (max_payload {max_payload})")
    frames, cur, req, resp = [], [], kv_bytes, 1
    for c in qs:
        size = len(attention_command_bytes(c, dim))
        if cur and (req + size > max_payload or resp + record > max_payload):
            frames.append(kv + cur)
            cur, req, resp = [], kv_bytes, 1
        cur.append(c)
        req += size
        resp += record
    frames.append(kv + cur)
    return frames


class _OffloadAttention:
    def __init__(self, ctx: _Ctx, plan: LayerPlan):
        self.ctx, self.plan, self.layer = ctx, plan, plan.layer

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tracer: Tracer = NULL_TRACER) -> torch.Tensor:
        layer = self.layer
        for name, s in (("q", q), ("k", k), ("v", v)):
            intops.check_spikes(f"{layer.name} {name}", s)
        dev, info, rq = self.ctx.device, self.ctx.info, layer.rq
        t, b, n, c = q.shape
        d = c // layer.heads
        if d > info.att_dim_max:
            raise ValueError(f"{layer.name}: head dim {d} > att_dim_max {info.att_dim_max}")
        if rq.m.shape[0] > 1 and layer.window == "clip":
            raise ValueError(f"{layer.name}: per-step requant over a clip window is not supported")
        window = n if layer.window == "frame" else t * n
        if window > info.att_max_tokens:
            raise ValueError(f"{layer.name}: window of {window} KV tokens > att_max_tokens {info.att_max_tokens}")
        st, before, t0 = self.ctx.begin(self.plan)
        out = torch.empty(t, b, n, c, dtype=torch.int32)
        steps = range(t) if layer.window == "frame" else [None]
        for ts in steps:
            m, s_, b_ = _params_rows(rq, ts or 0)
            for h in range(layer.heads):
                sl = slice(h * d, (h + 1) * d)
                dev.write_params(0, m[sl], s_[sl], b_[sl])  # this head's channels at p_base 0
                for bi in range(b):
                    if ts is None:  # joint space-time window: T * N tokens
                        qw, kw, vw = (x[:, bi, :, sl].reshape(t * n, d) for x in (q, k, v))
                    else:
                        qw, kw, vw = (x[ts, bi, :, sl] for x in (q, k, v))
                    cmds = encode_window(kw, vw, qw, layer.mode, compact=True)
                    body = cmds[1:]
                    if any(int(r.sum()) == 0 for r in qw) and not any(
                            c_["op"] == OP_Q and c_.get("mode") for c_ in body):
                        first_q = next((i for i, c_ in enumerate(body) if c_["op"] == OP_Q), len(body))
                        body.insert(first_q, {"op": OP_Q, "mode": 1})  # the requanted constant (dot: requant(0))
                    recs = []
                    for part in _attention_frames(body, d, rq.out_bits, info.max_payload):
                        recs += dev.attention(part, mode=layer.mode, dim=d, tokens=cmds[0]["tokens"], p_base=0,
                                              out_bits=rq.out_bits)
                    beats = [{"data": r["data"], "group": 0, "last": 1, "skip": r["skip"], "const": r["const"]}
                             for r in recs]
                    o = decode_readout(beats, qw.shape[0], d, d, layer.mode)
                    st.in_spikes += int(qw.sum() + kw.sum())
                    if ts is None:
                        out[:, bi, :, sl] = o.reshape(t, n, d)
                    else:
                        out[ts, bi, :, sl] = o
        self.ctx.end(st, before, t0)
        out = out.to(torch.int8) if rq.out_bits == 8 else out
        tracer.record(layer.name, "out", out)
        return out


_PROXIES = {"linear": _OffloadLinear, "conv": _OffloadConv, "lif": _OffloadLIF, "attention": _OffloadAttention}


def run(program: Program, clip: torch.Tensor, device, *, progress: bool = True,
        tracer: Tracer = NULL_TRACER) -> RunResult:
    """Run ``clip`` through ``program`` on ``device`` (a ``driver.protocol.Device``).

    ``clip``: int8 ``(B, C, T, H, W)`` (``int_model.quantize_clip`` of a float clip). Returns the
    int32 logits ``(B, classes)`` and per-layer statistics. Raises before sending anything when the
    clip does not fit the model; a device error or a transport timeout propagates as raised (no
    partial result is returned).
    """
    model = program.int_model
    if not isinstance(clip, torch.Tensor):
        raise TypeError(f"clip must be a torch.Tensor, got {type(clip).__name__}")
    model.check_int_clip(clip)
    bar = tqdm(total=len(program.plans), desc=f"{model.name} on device", unit="layer", disable=not progress)
    ctx = _Ctx(device, program, bar)
    t0 = time.perf_counter()
    try:
        device.reset()
        proxied = with_planned_layers(model, program, lambda kind, plan: _PROXIES[kind](ctx, plan))
        logits = proxied.forward(clip, tracer)
    finally:
        bar.close()
    return RunResult(logits, list(ctx.stats.values()), time.perf_counter() - t0, program.host_layers)
