"""Operation counts and energy estimate of one clip through a float spiking model.

:func:`profile_clip` runs one clip (batch 1) through a float model (eval mode, inference mode)
with forward hooks and returns an :class:`EnergyReport`: one :class:`LayerRow` per weighted
layer (every ``Conv1d``/``Conv2d``/``Conv3d``/``Linear``) and per attention product, in
execution order, plus one :class:`NeuronRow` per spiking-neuron layer.

Definitions (per clip, batch 1):

* **input kind**: ``"spike"`` when the layer's input holds only 0 and 1, else ``"real"``. An
  all-zero input counts as spikes only when it is (a view of) a spiking-neuron output; an
  all-zero output of another layer (a silent network feeding e.g. a depthwise conv) is ``"real"``
  and costs its dense MACs.
* **firing rate**: fraction of non-zero elements of a spike input; ``None`` for real inputs.
* **dense MACs**: output elements x fan-in per output (``C_in/groups * prod(kernel)`` for a conv,
  ``in_features`` for a linear), from shapes. Bias additions are not counted.
* **SOPs** (synaptic operations, accumulates) for a spike input: the number of
  (active input, weight, output) triples, i.e. the additions an event-driven engine performs.
  Counted exactly from the actual spike tensor: ``active inputs x out_features`` for a linear;
  for a conv, the spike indicator (summed over the input channels of each group) is convolved
  with a ones kernel of the conv's kernel size, stride, padding, dilation and groups, summed, and
  multiplied by the output channels per group (exact at borders and for any stride). For a spike
  input ``SOPs <= dense MACs`` and ``SOPs ~= dense MACs x firing rate``.
* **MACs**: the dense MACs of a layer whose input is real-valued (0 for spike inputs).
* **energy**: ``E = SOPs x E_AC + MACs x E_MAC`` with the 45 nm figures of Horowitz (ISSCC 2014)
  commonly used for SNNs: ``E_AC = 0.9 pJ`` (32-bit float add), ``E_MAC = 4.6 pJ`` (32-bit float
  multiply-add). Both are module constants; override them per call or by assigning the module
  attributes.

Attention products (spiking linear attention, no softmax) are two rows per attention module,
``<name>.kv_counts`` (``K^T V``) and ``<name>.readout`` (``Q (K^T V)``). ``q``, ``k``, ``v`` are captured
from the attention module's ``q_lif``/``k_lif``/``v_lif`` outputs and split into heads with the
module's own ``split_heads``. Per head, a *window* is the set of tokens one ``K^T V`` sums over:
one frame (``H*W`` tokens) for :class:`golden_model.svformer.Attention` and SpikeVideoFormer's
``dot2d`` mode, the whole clip (``T*H*W`` tokens) for SpikeVideoFormer's joint ``hamming`` and
``dot`` modes. With ``D`` the head dim, ``N`` tokens per window, ``|x|`` the popcount of a
token's ``D`` spikes in one head:

* dense MACs: ``N x D x D`` per window and head, for each of the two products.
* dot mode, ``K^T V``: ``sum over tokens |k| x |v|`` (each active pair ``(k_i, v_j)`` adds 1
  into ``KV[i, j]``); ``Q (KV)``: ``sum over tokens |q| x D`` (each active ``q_i`` adds the row
  ``KV[i, :]``).
* Hamming mode, ``(2Q-1) ((2K-1)^T V) / (2C)``, computed as ``2 K^T V - 1^T V`` and
  ``2 Q M - 1 M``: the dot-mode counts plus the corrections, per window and head,
  ``sum over tokens |v|`` (the column counts ``1^T V``) and ``D x D`` (``2 KV - 1^T V``) on the
  ``K^T V`` row; ``D x D`` (the column sums ``1 M``) and ``N x D`` (subtracting them from every
  output) on the ``Q (KV)`` row. Doubling is a shift and is free.
* Scale factors (``head_dim**-0.5``, ``0.125``, ``1/(2C)``) fold into the next threshold/BN
  and are not counted. All attention operations are accumulates (``E_AC``), none are MACs.

Not counted anywhere: BatchNorm (folds into the weights/thresholds), residual additions,
pooling/means, and neuron updates (listed separately in :class:`NeuronRow`, not in the energy).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from .neurons import LIF

E_AC = 0.9  # pJ per accumulate (45 nm, 32-bit float add; Horowitz 2014)
E_MAC = 4.6  # pJ per multiply-accumulate (45 nm, 32-bit float mult + add; Horowitz 2014)

WEIGHTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class LayerRow:
    """One weighted layer or attention product (see the module docstring for definitions)."""

    index: int
    name: str
    op: str  # "conv1d" | "conv2d" | "conv3d" | "linear" | "attn_kv" | "attn_qkv"
    input_kind: str  # "spike" | "real"
    firing_rate: float | None
    dense_macs: int
    sops: int
    macs: int
    energy_pj: float
    in_shape: list[int] = field(default_factory=list)
    out_shape: list[int] = field(default_factory=list)


@dataclass
class NeuronRow:
    """A spiking-neuron layer: ``updates`` membrane updates (elements x steps), ``spikes`` emitted."""

    name: str
    updates: int
    spikes: int
    firing_rate: float


@dataclass
class EnergyReport:
    """Per-layer rows (execution order), neuron rows and totals for one clip."""

    model: str
    rows: list[LayerRow]
    neurons: list[NeuronRow]
    e_ac_pj: float
    e_mac_pj: float
    notes: list[str] = field(default_factory=list)

    @property
    def total_sops(self) -> int:
        return sum(r.sops for r in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def total_dense_macs(self) -> int:
        return sum(r.dense_macs for r in self.rows)

    @property
    def total_energy_pj(self) -> float:
        return self.total_sops * self.e_ac_pj + self.total_macs * self.e_mac_pj

    @property
    def dense_energy_pj(self) -> float:
        """Energy of the same network run densely as an ANN (every dense MAC at ``E_MAC``)."""
        return self.total_dense_macs * self.e_mac_pj

    @property
    def total_neuron_updates(self) -> int:
        return sum(n.updates for n in self.neurons)

    @property
    def mean_firing_rate(self) -> float | None:
        """Spikes emitted / neuron updates over all neuron layers."""
        u = self.total_neuron_updates
        return sum(n.spikes for n in self.neurons) / u if u else None

    def totals(self) -> dict:
        return {
            "sops": self.total_sops,
            "macs": self.total_macs,
            "dense_macs": self.total_dense_macs,
            "energy_pj": self.total_energy_pj,
            "energy_uj": self.total_energy_pj * 1e-6,
            "dense_energy_pj": self.dense_energy_pj,
            "neuron_updates": self.total_neuron_updates,
            "mean_firing_rate": self.mean_firing_rate,
        }

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "e_ac_pj": self.e_ac_pj,
            "e_mac_pj": self.e_mac_pj,
            "notes": list(self.notes),
            "rows": [asdict(r) for r in self.rows],
            "neurons": [asdict(n) for n in self.neurons],
            "totals": self.totals(),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict) -> EnergyReport:
        row_keys = {f.name for f in fields(LayerRow)}
        neuron_keys = {f.name for f in fields(NeuronRow)}
        return cls(
            model=d["model"],
            rows=[LayerRow(**{k: v for k, v in r.items() if k in row_keys}) for r in d["rows"]],
            neurons=[NeuronRow(**{k: v for k, v in n.items() if k in neuron_keys}) for n in d["neurons"]],
            e_ac_pj=d["e_ac_pj"],
            e_mac_pj=d["e_mac_pj"],
            notes=list(d.get("notes", [])),
        )

    @classmethod
    def from_json(cls, text: str) -> EnergyReport:
        return cls.from_dict(json.loads(text))

    def format_table(self) -> str:
        """A fixed-width text table of the rows and the totals."""
        return format_table(self)


# ----------------------------------------------------------------------------------------------
# counting


def is_spike_tensor(x: torch.Tensor) -> bool:
    """True when ``x`` holds only 0 and 1 (an all-zero tensor counts as spikes)."""
    return bool(((x == 0) | (x == 1)).all())


def fan_in(layer: nn.Module) -> int:
    """Weights feeding one output element of a conv or linear layer."""
    if isinstance(layer, nn.Linear):
        return layer.in_features
    return (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)


def dense_macs(layer: nn.Module, out: torch.Tensor) -> int:
    """Output elements x fan-in."""
    return out.numel() * fan_in(layer)


def linear_sops(layer: nn.Linear, x: torch.Tensor) -> int:
    """Exact SOPs of a linear layer on spike input ``x``: active inputs x ``out_features``."""
    return int(torch.count_nonzero(x)) * layer.out_features


def conv_sops(layer: nn.Module, x: torch.Tensor) -> int:
    """Exact SOPs of a ``Conv1d/2d/3d`` on spike input ``x`` ``(N, C_in, *spatial)`` (or unbatched).

    Counts the (active input, kernel tap, output position) triples by convolving the per-group
    active-channel count with a ones kernel using the layer's own stride/padding/dilation/groups,
    then multiplies by the output channels per group.
    """
    nd = len(layer.kernel_size)
    if x.dim() == nd + 1:
        x = x.unsqueeze(0)
    g = layer.groups
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    counts = (x != 0).to(torch.float64).reshape(n, g, c // g, *spatial).sum(2)
    ones = torch.ones(g, 1, *layer.kernel_size, dtype=torch.float64, device=x.device)
    hits = layer._conv_forward(counts, ones, None)
    return int(round(float(hits.sum()))) * (layer.out_channels // g)


def layer_sops(layer: nn.Module, x: torch.Tensor) -> int:
    return linear_sops(layer, x) if isinstance(layer, nn.Linear) else conv_sops(layer, x)


def _op_name(layer: nn.Module) -> str:
    return "linear" if isinstance(layer, nn.Linear) else type(layer).__name__.lower()


def attention_windows(attn: nn.Module, q_heads: torch.Tensor) -> tuple[int, int]:
    """``(windows, tokens per window)`` over all heads for heads-split ``q`` ``(T, B, H, N, D)``.

    Joint space-time modes (``mode`` ``"hamming"``/``"dot"``) sum ``K^T V`` over all ``T*N``
    tokens of a clip; otherwise (SVFormer, ``dot2d``) each frame is its own window.
    """
    t, b, h, n, _ = q_heads.shape
    if getattr(attn, "mode", None) in ("hamming", "dot"):
        return b * h, t * n
    return t * b * h, n


def attention_mode(attn: nn.Module) -> str:
    return "hamming" if getattr(attn, "mode", None) == "hamming" else "dot"


def attention_rows_counts(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          dense_only: bool = False) -> dict:
    """Counts for the two products of one attention module from its ``q_lif``/``k_lif``/``v_lif``
    outputs (not yet split into heads). Returns a dict with keys ``kv`` and ``qkv``, each
    ``(dense_macs, sops, firing_rate, in_shape, out_shape)``."""
    qh, kh, vh = attn.split_heads(q), attn.split_heads(k), attn.split_heads(v)
    d = qh.shape[-1]
    tokens_heads = qh.numel() // d  # sum over windows of N, times heads
    windows, n = attention_windows(attn, qh)
    dense = tokens_heads * d * d
    kv_shape = [windows, d, d]
    if dense_only:
        return {"kv": (dense, 0, None, list(kh.shape), kv_shape),
                "qkv": (dense, 0, None, list(qh.shape), list(qh.shape))}
    pq = qh.ne(0).sum(-1, dtype=torch.int64)
    pk = kh.ne(0).sum(-1, dtype=torch.int64)
    pv = vh.ne(0).sum(-1, dtype=torch.int64)
    sops_kv = int((pk * pv).sum())
    sops_qkv = int(pq.sum()) * d
    if attention_mode(attn) == "hamming":
        sops_kv += int(pv.sum()) + windows * d * d
        sops_qkv += windows * d * d + windows * n * d
    rate_kv = float((pk.sum() + pv.sum()) / (kh.numel() + vh.numel()))
    rate_q = float(pq.sum() / qh.numel())
    return {"kv": (dense, sops_kv, rate_kv, list(kh.shape), kv_shape),
            "qkv": (dense, sops_qkv, rate_q, list(qh.shape), list(qh.shape))}


def find_attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules with ``q_lif``, ``k_lif``, ``v_lif`` and ``split_heads`` (name -> module)."""
    return {name: m for name, m in model.named_modules()
            if all(hasattr(m, a) for a in ("q_lif", "k_lif", "v_lif", "split_heads"))}


class _Profiler:
    """Forward hooks that append rows in execution order."""

    def __init__(self, model: nn.Module, e_ac: float, e_mac: float, dense_only: bool):
        self.model = model
        self.e_ac, self.e_mac = e_ac, e_mac
        self.dense_only = dense_only
        self.rows: list[LayerRow] = []
        self.neurons: list[NeuronRow] = []
        self.handles: list = []
        self.captured: dict[str, dict[str, torch.Tensor]] = {}
        self.attn = find_attention_modules(model)
        # silent (all-zero) neuron outputs, kept alive while profiling so their memory is not
        # reused by another tensor that would then be mistaken for them
        self.silent_outputs: dict[int, torch.Tensor] = {}

    def _from_neuron(self, x: torch.Tensor) -> bool:
        """Whether ``x`` shares storage with a silent neuron output (a view of it)."""
        try:
            return x.untyped_storage().data_ptr() in self.silent_outputs
        except (RuntimeError, NotImplementedError):
            return False

    def _add(self, name, op, kind, rate, dense, sops, macs, in_shape, out_shape) -> None:
        energy = sops * self.e_ac + macs * self.e_mac
        self.rows.append(LayerRow(len(self.rows), name, op, kind, rate, int(dense), int(sops),
                                  int(macs), float(energy), list(in_shape), list(out_shape)))

    def _layer_hook(self, name: str):
        def hook(layer, inputs, out):
            x = inputs[0]
            dense = dense_macs(layer, out)
            if self.dense_only:
                self._add(name, _op_name(layer), "real", None, dense, 0, dense, x.shape, out.shape)
            elif is_spike_tensor(x) and (bool(x.any()) or self._from_neuron(x)):
                rate = float(torch.count_nonzero(x)) / x.numel() if x.numel() else 0.0
                self._add(name, _op_name(layer), "spike", rate, dense, layer_sops(layer, x), 0,
                          x.shape, out.shape)
            else:
                self._add(name, _op_name(layer), "real", None, dense, 0, dense, x.shape, out.shape)
        return hook

    def _neuron_hook(self, name: str):
        def hook(module, inputs, out):
            if self.dense_only:
                return
            spikes = int(torch.count_nonzero(out))
            if spikes == 0:
                self.silent_outputs[out.untyped_storage().data_ptr()] = out
            self.neurons.append(NeuronRow(name, out.numel(), spikes,
                                          spikes / out.numel() if out.numel() else 0.0))
        return hook

    def _qkv_hook(self, attn_name: str, which: str):
        def hook(module, inputs, out):
            got = self.captured.setdefault(attn_name, {})
            got[which] = out
            if len(got) == 3:
                del self.captured[attn_name]
                counts = attention_rows_counts(self.attn[attn_name], got["q"], got["k"], got["v"],
                                               self.dense_only)
                for part, row in (("kv", "kv_counts"), ("qkv", "readout")):
                    dense, sops, rate, ins, outs = counts[part]
                    self._add(f"{attn_name}.{row}", f"attn_{part}", "spike", rate, dense, sops, 0,
                              ins, outs)
        return hook

    def __enter__(self) -> _Profiler:
        for name, m in self.model.named_modules():
            if isinstance(m, WEIGHTED_LAYERS):
                self.handles.append(m.register_forward_hook(self._layer_hook(name)))
            elif isinstance(m, LIF):
                self.handles.append(m.register_forward_hook(self._neuron_hook(name)))
        for name, attn in self.attn.items():
            for which in ("q", "k", "v"):
                self.handles.append(getattr(attn, f"{which}_lif").register_forward_hook(
                    self._qkv_hook(name, which)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.silent_outputs.clear()
        self.captured.clear()


def model_clip_shape(model: nn.Module) -> tuple[int, int, int, int, int]:
    """``(1, in_chans, frames, img, img)`` from the model's ``cfg``."""
    c = model.cfg
    return (1, c.in_chans, c.frames, c.img_size, c.img_size)


def random_clip(model: nn.Module, seed: int = 0, mean: float = 0.45, std: float = 0.225) -> torch.Tensor:
    """A uniform-random ``[0, 1]`` clip normalised with ``(x - mean) / std``, batch 1."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(model_clip_shape(model), generator=g) - mean) / std


def profile_clip(model: nn.Module, clip: torch.Tensor, name: str = "", e_ac: float | None = None,
                 e_mac: float | None = None, notes: list[str] | None = None) -> EnergyReport:
    """Run ``clip`` (batch 1) through ``model`` in eval/inference mode and count operations.

    ``e_ac``/``e_mac`` (pJ) default to the module constants :data:`E_AC`, :data:`E_MAC` at
    call time. The model is put in eval mode and restored afterwards.
    """
    if clip.dim() != 5 or clip.shape[0] != 1:
        raise ValueError(f"expected one clip of shape (1, C, T, H, W), got {tuple(clip.shape)}")
    e_ac = E_AC if e_ac is None else float(e_ac)
    e_mac = E_MAC if e_mac is None else float(e_mac)
    was_training = model.training
    model.eval()
    try:
        with _Profiler(model, e_ac, e_mac, dense_only=False) as p, torch.inference_mode():
            model(clip)
    finally:
        model.train(was_training)
    return EnergyReport(name or type(model).__name__, p.rows, p.neurons, e_ac, e_mac, list(notes or []))


def dense_counts(model: nn.Module) -> list[LayerRow]:
    """Dense MACs per layer and attention product for one clip (batch 1), from shapes only.

    Runs a forward on a copy of the model on the ``meta`` device (no data, fast); falls back
    to a zero clip on the CPU if the model cannot run on ``meta``. Rows have ``sops = 0`` and
    ``macs = dense_macs``.
    """
    import copy

    shape = model_clip_shape(model)
    try:
        m = copy.deepcopy(model).to("meta").eval()
        clip = torch.zeros(shape, device="meta")
        with _Profiler(m, E_AC, E_MAC, dense_only=True) as p, torch.inference_mode():
            m(clip)
    except (NotImplementedError, RuntimeError):
        was_training = model.training
        model.eval()
        try:
            with _Profiler(model, E_AC, E_MAC, dense_only=True) as p, torch.inference_mode():
                model(torch.zeros(shape))
        finally:
            model.train(was_training)
    return p.rows


# ----------------------------------------------------------------------------------------------
# formatting


def _si(n: float | int) -> str:
    n = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}" if n == int(n) else f"{n:.2f}"


def format_table(report: EnergyReport) -> str:
    """Fixed-width table: one line per row, then totals."""
    w = max([len("layer")] + [len(r.name) for r in report.rows])
    head = (f"{'#':>4}  {'layer':<{w}}  {'op':<9} {'input':<5} {'rate':>6}  {'dense MACs':>10}  "
            f"{'SOPs':>10}  {'MACs':>10}  {'energy uJ':>10}")
    lines = [f"model {report.model}: E_AC = {report.e_ac_pj} pJ, E_MAC = {report.e_mac_pj} pJ",
             *report.notes, head, "-" * len(head)]
    for r in report.rows:
        rate = "-" if r.firing_rate is None else f"{r.firing_rate:.4f}"
        lines.append(f"{r.index:>4}  {r.name:<{w}}  {r.op:<9} {r.input_kind:<5} {rate:>6}  "
                     f"{_si(r.dense_macs):>10}  {_si(r.sops):>10}  {_si(r.macs):>10}  "
                     f"{r.energy_pj * 1e-6:>10.4f}")
    lines.append("-" * len(head))
    t = report.totals()
    mfr = "-" if t["mean_firing_rate"] is None else f"{t['mean_firing_rate']:.4f}"
    lines += [
        f"total: {_si(t['sops'])} SOPs, {_si(t['macs'])} MACs (of {_si(t['dense_macs'])} dense MACs)",
        f"energy: {t['energy_uj']:.3f} uJ per clip (dense ANN equivalent {t['dense_energy_pj'] * 1e-6:.3f} uJ)",
        f"neurons: {_si(t['neuron_updates'])} updates, mean firing rate {mfr} (not in the energy)",
    ]
    return "\n".join(lines)
