"""Accelerator vs CPU vs GPU for one clip: cycles, latency, link time, ops per cycle and energy (issue 6).

    python -m benchmarks.compare --model svformer-tiny [--transport verilator|emulator]   (= spikevid bench)

:func:`bench` gathers, for one clip of one model, per layer and in total:

* **firing rate, SOPs, MACs** of every weighted layer and attention product: the energy report of the
  float model (:func:`golden_model.energy.profile_clip`, 0.9 pJ per accumulate, 4.6 pJ per MAC);
* **accelerator cycles** per offloaded layer (the engine's busy cycles, ``driver.run.LayerStats.cycles``),
  each labelled:

  - ``measured (RTL)``: the RTL accelerator's own counters through ``driver.run`` on the Verilator
    transport (tiny models; ``--transport emulator`` gives the golden emulator's instead, labelled
    ``emulator``);
  - ``modelled``: :func:`driver.cycle_model.model_program`, the closed-form cycle model evaluated on the
    integer model's own spikes under the driver's schedule, without the protocol. On every measured run
    the model is compared layer by layer with the counters (``cycle_model_exact``); full-size clips are
    only modelled, on :data:`FULL_SIZE_DEVICE` (the committed engines with memories large enough for a
    full-size layer), and a sample of tokens of some full-size layers is run through the Verilator
    accelerator and compared with the model on the same tokens (:func:`sample_rtl`);

* **latency** of the accelerator's engines at the clock of the committed bitstream report
  (:data:`BOARD_REPORT`; :data:`ASSUMED_CLOCK_MHZ` and :data:`ASSUMED_UART_BAUD` when it does not exist,
  labelled ``assumed``), and the **link time** of the clip's frames (weights, parameters, spikes and
  results, the byte counts of ``driver.protocol.Device.link_bytes``, or the cycle model's for modelled
  clips) at the board's UART rate (10 bits per byte) and at :data:`FAST_LINK_BYTES_S`;
* **CPU time** of the float and integer golden models (batch 1 and 8, median of ``repeats`` after a
  warm-up, this machine's torch threads) and per layer of the float model (forward hooks);
* **GPU time** of the float model when CUDA is present (batch 1 and 16, CUDA events after a warm-up),
  converted to cycles with the SM clock measured while it runs (``nvidia-smi``), and the GPU's CUDA cores
  (SMs x :data:`CUDA_CORES_PER_SM`); when CUDA is absent every GPU figure is ``None`` (never estimated);
* **ops per cycle**: the accelerator's useful accumulates per lane-cycle on its spike-driven layers
  (``SOPs / (P x busy)``; attention: ``dim x spikes / (P x busy)``) and the GPU's SOPs per CUDA-core-cycle
  (the clip's SOPs / (seconds x SM clock x CUDA cores));
* **energy per clip**: the 45 nm SNN estimate of the energy report, the FPGA board at
  :data:`FPGA_BOARD_W` (an assumption) x the engines' latency, and the GPU at its measured board power x
  its latency.

The integer model of a full-size model comes from freshly initialised weights whose BatchNorm statistics
are set from the clip itself (:func:`calibrate_batchnorm`), so that every LIF sees unit-variance input
and fires at a plausible rate (a randomly initialised network with default statistics falls silent after
its first stages); there is no trained full-size checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

__all__ = [
    "ASSUMED_CLOCK_MHZ", "ASSUMED_UART_BAUD", "FAST_LINK_BYTES_S", "FPGA_BOARD_W", "BOARD_REPORT",
    "FULL_SIZE_DEVICE", "CUDA_CORES_PER_SM", "board_clock", "cuda_cores_per_sm", "gpu_properties",
    "sops_per_core_cycle", "calibrate_batchnorm", "time_call", "cpu_times", "gpu_times", "layer_times",
    "sample_rtl", "bench",
    "apply_clock", "format_report", "format_markdown", "plot_report", "run_from_args",
]

BOARD_REPORT = Path("bitstreams/reports/ulx3s-85f.json")
# used when the bitstream report does not exist yet (labelled "assumed"): the accelerator's out-of-context
# nextpnr-ecp5 Fmax on the LFE5U-85F (docs/accelerator.md, 46.9 MHz) and the ULX3S FT231X's top UART rate
ASSUMED_CLOCK_MHZ = 46.9
ASSUMED_UART_BAUD = 3_000_000
FAST_LINK_BYTES_S = 100e6   # a stated faster link: 100 MB/s (e.g. a USB 2.0 FIFO bridge or PCIe)
FPGA_BOARD_W = 1.0          # assumption: ULX3S 85F board power while the accelerator runs, watts
UART_BITS_PER_BYTE = 10     # 8N1
# the committed engines (lanes from the bitstream report) with memories and frames large enough for every
# full-size layer (head dims up to 80, clip windows up to 3136 tokens, 65535-byte frames)
FULL_SIZE_DEVICE = {"in_max": 1024, "weight_rows": 65535, "param_channels": 4096, "membrane_rows": 1 << 20,
                    "att_dim_max": 128, "att_max_tokens": 4096, "max_payload": 65535}
# FP32 CUDA cores per SM by compute capability (NVIDIA CUDA C Programming Guide, "Arithmetic Instructions")
CUDA_CORES_PER_SM = {(6, 0): 64, (6, 1): 128, (6, 2): 128, (7, 0): 64, (7, 2): 64, (7, 5): 64, (8, 0): 64,
                     (8, 6): 128, (8, 7): 128, (8, 9): 128, (9, 0): 128, (10, 0): 128, (10, 1): 128,
                     (10, 3): 128, (12, 0): 128, (12, 1): 128}
TINY = ("svformer-tiny", "spikevideoformer-tiny")


# ------------------------------------------------------------------------------------------------
# board, CPU and GPU facts


def board_clock(report: Path | str = BOARD_REPORT) -> dict:
    """Clock, UART rate and lanes of the committed bitstream report, or the stated assumptions.

    The report's ``clocks.<name>`` (``sync`` if present, else the first) gives ``constraint_mhz`` and
    ``fmax_mhz``; the accelerator runs at the constraint when timing is met, else at ``fmax_mhz``."""
    path = Path(report)
    if not path.is_file():
        return {"mhz": ASSUMED_CLOCK_MHZ, "uart_baud": ASSUMED_UART_BAUD, "lanes": None, "label": "assumed",
                "source": f"{path} does not exist: assumed {ASSUMED_CLOCK_MHZ} MHz (docs/accelerator.md Fmax) "
                          f"and {ASSUMED_UART_BAUD:,} baud"}
    rep = json.loads(path.read_text())
    clocks = rep.get("clocks") or {}
    name = "sync" if "sync" in clocks else next(iter(clocks), None)
    c = clocks.get(name, {}) if name else {}
    constraint, fmax = c.get("constraint_mhz"), c.get("fmax_mhz")
    if constraint and fmax:
        mhz = constraint if fmax >= constraint else fmax
    else:
        mhz = constraint or fmax
    label = "report" if mhz else "assumed"
    baud = rep.get("uart_baud") or ASSUMED_UART_BAUD
    return {"mhz": float(mhz or ASSUMED_CLOCK_MHZ), "uart_baud": int(baud),
            "lanes": (rep.get("config") or {}).get("lanes"), "label": label, "clock": name,
            "constraint_mhz": constraint, "fmax_mhz": fmax,
            "source": f"{path}: clocks.{name} constraint {constraint} MHz, fmax {fmax} MHz, uart_baud "
                      f"{rep.get('uart_baud')}" + ("" if rep.get("uart_baud") else " (assumed)")}


def cpu_mhz() -> float | None:
    """The CPU clock the kernel reports (first core of ``/proc/cpuinfo``), for converting time to cycles."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("cpu mhz"):
                return float(line.split(":")[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def cuda_cores_per_sm(major: int, minor: int) -> int | None:
    """FP32 cores per SM of compute capability ``major.minor`` (None when unknown)."""
    return CUDA_CORES_PER_SM.get((int(major), int(minor)))


def gpu_properties(device: int = 0) -> dict | None:
    """Name, compute capability, SMs, CUDA cores of the CUDA device; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    p = torch.cuda.get_device_properties(device)
    per_sm = cuda_cores_per_sm(p.major, p.minor)
    return {"name": p.name, "capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
            "cores_per_sm": per_sm, "cuda_cores": p.multi_processor_count * per_sm if per_sm else None,
            "memory_gib": p.total_memory / 2**30}


def sops_per_core_cycle(sops: int, seconds: float, sm_clock_mhz: float | None, cuda_cores: int | None) -> float | None:
    """SOPs per CUDA-core-cycle: ``sops / (seconds x SM clock x CUDA cores)`` (None when a factor is unknown)."""
    if not sm_clock_mhz or not cuda_cores or not seconds:
        return None
    return sops / (seconds * sm_clock_mhz * 1e6 * cuda_cores)


def _nvidia_smi(fields: str, device: int = 0) -> list[float] | None:
    try:
        out = subprocess.run(["nvidia-smi", f"--id={device}", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return [float(v) for v in out.strip().splitlines()[0].split(",")]
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


class _GpuSampler:
    """Polls the SM clock (MHz) and board power (W) with ``nvidia-smi`` while the GPU runs."""

    def __init__(self, device: int = 0, period: float = 0.05):
        self.device, self.period = device, period
        self.samples: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            s = _nvidia_smi("clocks.sm,power.draw", self.device)
            if s is None:
                return
            self.samples.append(s)
            self._stop.wait(self.period)

    def __enter__(self) -> _GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def result(self) -> dict:
        if self.samples:
            return {"sm_clock_mhz": statistics.median(s[0] for s in self.samples),
                    "power_w": statistics.median(s[1] for s in self.samples), "clock_source": "nvidia-smi clocks.sm"}
        rate = getattr(torch.cuda, "clock_rate", None)
        try:
            mhz = float(rate(self.device)) if rate else None
        except Exception:  # noqa: BLE001 - pynvml missing or unsupported: no clock rather than a guess
            mhz = None
        return {"sm_clock_mhz": mhz, "power_w": None, "clock_source": "torch.cuda.clock_rate" if mhz else None}


# ------------------------------------------------------------------------------------------------
# timing


def time_call(fn, repeats: int, *, warmup: int = 1, sync=None) -> dict:
    """Wall seconds of ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones (median, min, all)."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(max(1, repeats)):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        runs.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(runs), "min_s": min(runs), "runs": runs}


@torch.inference_mode()
def cpu_times(float_model: nn.Module, int_model, clip: torch.Tensor, batches=(1, 8), repeats: int = 5) -> dict:
    """Float and integer golden models on this CPU, per batch size (the clip repeated ``b`` times).

    After one warm-up call of each, the two models alternate ``repeats`` times, so that a burst of load
    from another process slows both rather than one; medians and minima of the runs are reported."""
    float_model.eval()
    out = {}
    for b in batches:
        xb = clip.expand(b, *clip.shape[1:]).contiguous()
        qb = int_model.quantize_clip(xb)
        fns = {"float": lambda xb=xb: float_model(xb), "int": lambda qb=qb: int_model(qb)}
        runs: dict[str, list[float]] = {k: [] for k in fns}
        for fn in fns.values():
            fn()
        for _ in range(max(1, repeats)):
            for k, fn in fns.items():
                runs[k].append(time_call(fn, 1, warmup=0)["runs"][0])
        res = {k: {"median_s": statistics.median(v), "min_s": min(v), "runs": v} for k, v in runs.items()}
        out[str(b)] = res | {"float_per_clip_s": res["float"]["median_s"] / b,
                             "int_per_clip_s": res["int"]["median_s"] / b}
    return out


def gpu_times(float_model: nn.Module, clip: torch.Tensor, batches=(1, 16), repeats: int = 20,
              device: int = 0) -> dict | None:
    """The float model on the CUDA device (CUDA events, after a warm-up), per batch size; None without CUDA.

    The integer model is not timed on the GPU (integer matrix products have no CUDA kernels in torch)."""
    props = gpu_properties(device)
    if props is None:
        return None
    dev = torch.device("cuda", device)
    model = copy.deepcopy(float_model).to(dev).eval()
    out = {"device": props, "batches": {}}
    with torch.inference_mode():
        for b in batches:
            xb = clip.expand(b, *clip.shape[1:]).contiguous().to(dev)
            for _ in range(3):
                model(xb)
            torch.cuda.synchronize(dev)
            ms = []
            with _GpuSampler(device) as sampler:
                for _ in range(max(1, repeats)):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    model(xb)
                    end.record()
                    torch.cuda.synchronize(dev)
                    ms.append(start.elapsed_time(end))
            clk = sampler.result()
            med = statistics.median(ms) / 1e3
            cycles = med * clk["sm_clock_mhz"] * 1e6 if clk["sm_clock_mhz"] else None
            out["batches"][str(b)] = {"median_s": med, "min_s": min(ms) / 1e3, "runs": [m / 1e3 for m in ms],
                                      "per_clip_s": med / b, "cycles": cycles,
                                      "per_clip_cycles": cycles / b if cycles else None, **clk}
    del model
    torch.cuda.empty_cache()
    return out


def layer_times(model: nn.Module, clip: torch.Tensor, names: set[str], *, repeats: int = 3, device: str = "cpu",
                exclusive: set[str] = frozenset()) -> dict[str, float]:
    """Seconds per named module of one forward (forward hooks; median over ``repeats`` after a warm-up).

    Modules in ``exclusive`` report their own time minus that of the named modules inside them (e.g. an
    attention module without its projections and neurons: the attention products). Hook overhead
    inflates tiny layers; whole-model times come from :func:`cpu_times` / :func:`gpu_times`."""
    mods = {n: m for n, m in model.named_modules() if n in names}
    cuda = device != "cpu"
    runs: dict[str, list[float]] = {n: [] for n in mods}
    starts: dict[str, object] = {}
    acc: dict[str, float] = {}
    events: list[tuple[str, object, object]] = []

    def pre(name):
        def hook(m, inputs):
            if cuda:
                e = torch.cuda.Event(enable_timing=True)
                e.record()
                starts[name] = e
            else:
                starts[name] = time.perf_counter()
        return hook

    def post(name):
        def hook(m, inputs, out):
            if cuda:
                e = torch.cuda.Event(enable_timing=True)
                e.record()
                events.append((name, starts.pop(name), e))
            else:
                acc[name] = acc.get(name, 0.0) + time.perf_counter() - starts.pop(name)
        return hook

    handles = [h for n, m in mods.items()
               for h in (m.register_forward_pre_hook(pre(n)), m.register_forward_hook(post(n)))]
    try:
        with torch.inference_mode():
            for r in range(max(1, repeats) + 1):
                acc.clear()
                events.clear()
                model(clip)
                if cuda:
                    torch.cuda.synchronize()
                    for n, s, e in events:
                        acc[n] = acc.get(n, 0.0) + s.elapsed_time(e) / 1e3
                if r:  # the first pass is the warm-up
                    for n in mods:
                        runs[n].append(acc.get(n, 0.0))
    finally:
        for h in handles:
            h.remove()
    med = {n: statistics.median(v) for n, v in runs.items()}
    for ex in exclusive & set(med):
        inner = [n for n in med if n.startswith(ex + ".")]
        med[ex] = max(0.0, med[ex] - sum(med[n] for n in inner))
    return med


def gpu_layer_times(model: nn.Module, clip: torch.Tensor, names: set[str], *, repeats: int = 3,
                    exclusive: set[str] = frozenset()) -> dict[str, float]:
    """:func:`layer_times` of a copy of ``model`` on the CUDA device (CUDA events)."""
    g = copy.deepcopy(model).cuda().eval()
    try:
        return layer_times(g, clip.cuda(), names, repeats=repeats, device="cuda", exclusive=exclusive)
    finally:
        del g
        torch.cuda.empty_cache()


def execution_order(model: nn.Module, clip: torch.Tensor, names: set[str]) -> list[str]:
    """The named modules in the order their forward first runs (one forward pass on ``clip``)."""
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda m, i, n=n: None if n in order else order.append(n))
               for n, m in model.named_modules() if n in names]
    try:
        with torch.inference_mode():
            model(clip)
    finally:
        for h in handles:
            h.remove()
    return order


# ------------------------------------------------------------------------------------------------
# the models and the clip


@dataclass
class Subject:
    """One model and one clip: float and integer models, the float clip (batch 1) and its int8 version."""

    name: str
    float_model: nn.Module
    int_model: object
    clip: torch.Tensor
    x: torch.Tensor
    tiny: bool
    weights: str


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, clip: torch.Tensor) -> None:
    """Set every BatchNorm's statistics to those of its input on ``clip`` (one pass, batch statistics).

    A BatchNorm whose input has one value per channel (the classifier head's) keeps its defaults."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    handles = []
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one pass, exactly this pass's statistics

        def pre(mod, inputs):
            mod.train(inputs[0].numel() // max(1, mod.num_features) > 1)
        handles.append(m.register_forward_pre_hook(pre))
    model.eval()
    try:
        model(clip)
    finally:
        for h in handles:
            h.remove()
        model.eval()


def load_subject(name: str, clip_index: int = 0, seed: int = 0) -> Subject:
    """A shipped tiny model with synthetic test clip ``clip_index``, or a full-size model (random weights,
    BatchNorm calibrated on the clip) with a random clip."""
    from golden_model.pipeline import load_golden, quantize

    if name in TINY:
        from golden_model.train import test_split

        g = load_golden(name)
        ds = test_split(g.meta, size=clip_index + 1)
        clip, _ = ds.batch(slice(clip_index, clip_index + 1))
        return Subject(g.name, g.float_model.eval(), g.int_model, clip, g.int_model.quantize_clip(clip), True,
                       f"trained checkpoint golden_model/checkpoints/{name}.pt, synthetic test clip {clip_index}")
    from golden_model.energy import random_clip
    from golden_model.zoo import build_model

    torch.manual_seed(seed)
    model = build_model(name).eval()
    clip = random_clip(model, seed)
    calibrate_batchnorm(model, clip)
    with torch.inference_mode():
        int_model = quantize(model, [clip])
    return Subject(name, model, int_model, clip, int_model.quantize_clip(clip), False,
                   f"random weights (seed {seed}), BatchNorm statistics of the clip, uniform-random clip (seed {seed})")


# ------------------------------------------------------------------------------------------------
# the accelerator


def _useful_ops(kind: str, counters: dict, sops: int, dim: int) -> int:
    """Accumulates that do work: SOPs of a linear/conv layer, ``dim`` per active k/q index of attention."""
    if kind in ("linear", "conv"):
        return sops
    if kind == "attention":
        return dim * counters.get("attention_spikes", 0)
    return 0


def _lanes(kind: str, info) -> int:
    """Accumulator lanes of the engine that runs ``kind`` (0 for LIF: no accumulates): the attention engine
    has ``min(P, att_dim_max)`` (``rtl.accelerator.AcceleratorConfig.att_lanes``), the spike-accumulate P."""
    if kind == "attention":
        return min(info.lanes, info.att_dim_max)
    return info.lanes if kind in ("linear", "conv") else 0


def _open_device(transport: str, config: dict | None = None):
    from driver.protocol import Device

    if transport == "emulator":
        from driver.emulator import Emulator, EmulatorConfig
        from driver.transport import EmulatorTransport

        return Device(EmulatorTransport(Emulator(EmulatorConfig(**(config or {})))), timeout=60.0)
    from driver.transport import VerilatorTransport
    from rtl.accelerator import Accelerator
    from sim.byte_model import build_byte_model

    return Device(VerilatorTransport(build_byte_model("accelerator", Accelerator)), timeout=600.0)


def rtl_device_config() -> dict:
    """The RTL accelerator's default limits (its INFO) as ``EmulatorConfig`` keyword arguments."""
    from rtl.accelerator import AcceleratorConfig

    return {k: v for k, v in AcceleratorConfig().info().items() if k != "version"}


def measured_run(subject: Subject, transport: str, *, progress: bool = True) -> dict:
    """The clip through ``driver.run`` on ``transport``; per layer the counters, and the cycle model's
    figures for the same program with an exact-equality verdict."""
    from driver.cycle_model import COUNTER_KEYS, COUNTERS_OVERHEAD, model_program
    from driver.program import compile_model
    from driver.run import run

    device = _open_device(transport, rtl_device_config())
    info = device.info()
    program = compile_model(subject.int_model, info)
    t0 = time.perf_counter()
    res = run(program, subject.x, device, progress=progress)
    wall = time.perf_counter() - t0
    link = dict(device.link_bytes)
    device.close()
    sim_cycles = getattr(device.transport, "cycles", None)
    with torch.inference_mode():
        golden = subject.int_model(subject.x)
    model = model_program(program, subject.x)
    label = "measured (RTL)" if transport == "verilator" else "modelled (emulator)"
    layers = []
    for s, m in zip(res.layers, model.layers, strict=True):
        plan = program.plans[s.name]
        keys = [k for k in COUNTER_KEYS if k in s.counters or k in m.counters]
        meas = {k: s.counters.get(k, 0) for k in keys}
        link_b = {k: s.counters.get(k, 0) - s.calls * COUNTERS_OVERHEAD[k] for k in ("bytes_in", "bytes_out")}
        exact = meas == {k: m.counters.get(k, 0) for k in keys} and link_b == {
            k: m.counters.get(k, 0) for k in ("bytes_in", "bytes_out")}
        useful = _useful_ops(s.kind, s.counters, s.sops, plan.dim)
        layers.append({"name": s.name, "kind": s.kind, "cycles": s.cycles, "label": label,
                       "model_cycles": m.cycles, "model_exact": exact, "in_spikes": s.in_spikes, "sops": s.sops,
                       "useful_ops": useful, "lane_cycles": _lanes(s.kind, info) * s.cycles, "counters": meas,
                       **link_b})
    return {"transport": transport, "label": label, "lanes": info.lanes, "device": dataclass_dict(info),
            "logits_equal_golden": bool(torch.equal(res.logits, golden)), "wall_s": wall,
            "simulated_cycles": sim_cycles, "link_bytes_by_class": link, "layers": layers,
            "cycle_model_exact": all(r["model_exact"] for r in layers)}


def dataclass_dict(obj) -> dict:
    import dataclasses

    return dataclasses.asdict(obj)


def modelled_run(subject: Subject, lanes: int, *, capture=()) -> tuple[dict, object]:
    """The whole clip through the cycle model on :data:`FULL_SIZE_DEVICE` with ``lanes`` lanes."""
    from driver.cycle_model import model_program
    from driver.program import compile_model
    from driver.protocol import VERSION, DeviceInfo

    info = DeviceInfo(VERSION, lanes, clock_hz=100_000_000, **FULL_SIZE_DEVICE)
    program = compile_model(subject.int_model, info)
    m = model_program(program, subject.x, capture=capture, long_attention_frames=True)
    layers = []
    for s in m.layers:
        plan = program.plans[s.name]
        useful = _useful_ops(s.kind, s.counters, s.sops, plan.dim)
        layers.append({"name": s.name, "kind": s.kind, "cycles": s.cycles, "label": "modelled",
                       "model_cycles": s.cycles, "model_exact": None, "in_spikes": s.in_spikes, "sops": s.sops,
                       "useful_ops": useful, "lane_cycles": _lanes(s.kind, info) * s.cycles,
                       "long_frames": s.long_frames,
                       "counters": {k: v for k, v in s.counters.items() if not k.startswith("bytes")},
                       "bytes_in": s.counters.get("bytes_in", 0), "bytes_out": s.counters.get("bytes_out", 0)})
    return {"transport": None, "label": "modelled", "lanes": lanes, "device": dataclass_dict(info),
            "logits_equal_golden": None, "simulated_cycles": None, "layers": layers,
            "link_bytes_by_class": None, "cycle_model_exact": None}, (program, m)


def _patch_rows(x: torch.Tensor, t: int, kh: int, kw: int, stride: int, padding: int) -> torch.Tensor:
    import torch.nn.functional as F

    cols = F.unfold(x[t].float(), (kh, kw), padding=padding, stride=stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1]).to(torch.int8)


def sample_rtl(subject: Subject, inputs: dict[str, tuple[torch.Tensor, ...]], *, tokens: int = 256,
               seed: int = 0, transport: str = "verilator", progress: bool = True) -> list[dict]:
    """Run a random sample of ``tokens`` tokens of each captured linear/conv layer (its middle time step,
    first weight tile, first fan-in part) through the accelerator on ``transport``, and compare the
    counters with :func:`driver.cycle_model.linear_op_counters` on the same tokens and the outputs with
    the golden integer ops."""
    from driver.cycle_model import COUNTER_KEYS, linear_op_counters
    from driver.program import compile_model
    from golden_model import intops

    device = _open_device(transport, rtl_device_config())
    info = device.info()
    program = compile_model(subject.int_model, info)
    gen = torch.Generator().manual_seed(seed)
    out = []
    try:
        device.reset()
        for name, (x,) in tqdm(inputs.items(), desc="sampled tokens on the RTL", unit="layer", disable=not progress):
            plan = program.plans[name]
            layer = plan.layer
            t = x.shape[0] // 2
            if plan.kind == "conv":
                kh, kw = layer.weight.shape[2:]
                rows = _patch_rows(x, t, kh, kw, layer.stride, layer.padding)
            elif layer.layout == "flat":
                rows = x.reshape(-1, x.shape[-1])
            else:
                rows = x[t].reshape(-1, x.shape[-1])
            idx = torch.randperm(rows.shape[0], generator=gen)[:tokens]
            tile = plan.tiles[0]
            xs = rows[idx][:, tile.k_lo:tile.k_hi].contiguous()
            split = tile.k_hi - tile.k_lo != plan.c_in
            n = tile.hi - tile.lo
            rq = layer.rq
            row = t if rq.m.shape[0] > 1 else 0
            m, s, b = rq.m[row, tile.lo:tile.hi], rq.s[row, tile.lo:tile.hi], rq.b[row, tile.lo:tile.hi]
            out_bits = 32 if split else rq.out_bits
            w = layer.weight.reshape(layer.weight.shape[0], -1)[tile.lo:tile.hi, tile.k_lo:tile.k_hi]
            acc = intops.linear_int8(xs, w)
            if split:
                ones = torch.ones(n, dtype=torch.int64)
                m, s, b, want = 2 * ones, ones, 0 * ones, acc
            else:
                want = intops.requant(acc, m, s, b, out_bits)
            device.write_weights(0, tile.rows)
            device.write_params(0, m, s, b)
            before = device.counters()
            got = device.linear(xs, c_out=n, w_base=0, p_base=0, out_bits=out_bits)
            after = device.counters()
            meas = {k: (after[k] - before[k]) & 0xFFFF_FFFF for k in COUNTER_KEYS
                    if k.startswith(("linear", "requant"))}
            model = linear_op_counters(xs.sum(1, dtype=torch.int64), tile.k_hi - tile.k_lo, n, out_bits, info)
            modelled = {k: model.get(k, 0) for k in meas}
            sops = int(xs.sum()) * n
            out.append({"layer": name, "kind": plan.kind, "time_step": t, "tokens": int(xs.shape[0]),
                        "fan_in": tile.k_hi - tile.k_lo, "c_out": n, "layer_fan_in": plan.c_in,
                        "layer_c_out": plan.c_out, "firing_rate": float(xs.float().mean()),
                        "measured_busy": meas["linear_busy"], "modelled_busy": modelled["linear_busy"],
                        "counters_equal": meas == modelled, "outputs_equal": bool(torch.equal(got, want.to(got.dtype))),
                        "utilisation": sops / (info.lanes * meas["linear_busy"]) if meas["linear_busy"] else None,
                        "label": "measured (RTL, sampled tokens)" if transport == "verilator" else
                        "modelled (emulator, sampled tokens)"})
    finally:
        device.close()
    return out


# ------------------------------------------------------------------------------------------------
# the report


def _per_layer(subject: Subject, energy, accel: dict, cpu_layers: dict, gpu_layers: dict | None,
               order: list[str]) -> list[dict]:
    """One row per weighted layer, attention module (its two products) and offloaded LIF, in execution order."""
    rows: dict[str, dict] = {}
    for r in energy.rows:
        name, attn = r.name, False
        if r.op.startswith("attn_"):
            name, attn = r.name.rsplit(".", 1)[0] + ".attn", True
        row = rows.setdefault(name, {"layer": name, "op": "attention" if attn else r.op, "input_kind": r.input_kind,
                                     "firing_rate": r.firing_rate, "sops": 0, "macs": 0, "dense_macs": 0,
                                     "energy_pj": 0.0})
        row["sops"] += r.sops
        row["macs"] += r.macs
        row["dense_macs"] += r.dense_macs
        row["energy_pj"] += r.energy_pj
        if attn and r.op == "attn_qkv":
            row["q_firing_rate"] = r.firing_rate
    neurons = {n.name: n for n in energy.neurons}
    for a in accel["layers"]:
        row = rows.setdefault(a["name"], {"layer": a["name"], "op": a["kind"], "input_kind": "real",
                                          "firing_rate": None, "sops": 0, "macs": 0, "dense_macs": 0, "energy_pj": 0.0})
        if a["kind"] == "lif" and a["name"] in neurons:
            row["out_firing_rate"] = neurons[a["name"]].firing_rate
        row["where"] = "accelerator"
        row["accel"] = {k: a[k] for k in ("kind", "cycles", "label", "model_cycles", "model_exact", "sops",
                                          "useful_ops", "lane_cycles", "bytes_in", "bytes_out")} | (
            {"long_frames": a["long_frames"]} if a.get("long_frames") else {})
        lc = a["lane_cycles"]
        row["accel"]["utilisation"] = a["useful_ops"] / lc if lc else None
    # float sub-layers that the device runs as one fused layer (a RepConv's 1x1 -> dw3x3 -> pw1x1 as one 3x3
    # conv on spikes): marked "fused", and the device layer takes the input firing rate of the first
    acc_names = {a["name"] for a in accel["layers"]}
    for name, row in rows.items():
        parent = next((a for a in acc_names if name.startswith(a + ".")), None) if name not in acc_names else None
        if parent is not None:
            row["where"], row["fused_into"] = "fused", parent
            if rows[parent]["firing_rate"] is None and row["input_kind"] == "spike":
                rows[parent]["firing_rate"], rows[parent]["input_kind"] = row["firing_rate"], "spike"
    pos = {n: i for i, n in enumerate(order)}
    for name, row in rows.items():
        row.setdefault("where", "host")
        attn = row["op"] == "attention"
        base = name[:-len(".attn")] if attn else name
        row["_pos"] = pos.get(base + ".v_lif" if attn else name, math.inf)
        row["cpu_float_s"] = cpu_layers.get(base)
        row["gpu_float_s"] = gpu_layers.get(base) if gpu_layers else None
    out = sorted(rows.values(), key=lambda r: r["_pos"])
    for r in out:
        del r["_pos"]
    return out


def bench(model: str, *, clip: int = 0, transport: str = "verilator", batches=(1, 8), gpu_batches=(1, 16),
          repeats: int = 5, gpu_repeats: int = 20, layer_repeats: int = 3, sample_tokens: int = 256,
          sample_layers: int = 4, report: Path | str = BOARD_REPORT, progress: bool = True,
          seed: int = 0) -> dict:
    """Everything of the module docstring for one clip of ``model``, as a JSON-able dict.

    Tiny models run on ``transport`` (``verilator``: measured on the RTL; ``emulator``: the golden
    emulator) and are also modelled; full-size models are modelled, and ``sample_layers`` of their
    linear/conv layers are sampled (``sample_tokens`` tokens each) on ``transport`` (0 to skip)."""
    from golden_model.energy import profile_clip

    clock = board_clock(report)
    stages = tqdm(total=5, desc=f"bench {model}", unit="stage", disable=not progress)

    def stage(what: str) -> None:
        stages.set_postfix_str(what)

    try:
        stage("models")
        subject = load_subject(model, clip, seed)
        stages.update()
        stage("energy report")
        energy = profile_clip(subject.float_model, subject.clip, subject.name)
        stages.update()
        stage("accelerator")
        lanes = clock["lanes"] or 16
        samples: list[dict] = []
        if subject.tiny:
            accel = measured_run(subject, transport, progress=progress)
        else:
            from driver.program import compile_model
            from driver.protocol import VERSION, DeviceInfo

            pre = compile_model(subject.int_model, DeviceInfo(VERSION, lanes, clock_hz=100_000_000, **FULL_SIZE_DEVICE))
            picks = [n for n, p in pre.plans.items() if p.kind in ("linear", "conv")]
            step = max(1, len(picks) // max(1, sample_layers)) if sample_layers else 0
            capture = picks[::step][:sample_layers] if step else []
            accel, (_, m) = modelled_run(subject, lanes, capture=capture)
            stages.update()
            if capture and sample_tokens:
                stage("sampled tokens on the RTL")
                samples = sample_rtl(subject, m.inputs, tokens=sample_tokens, seed=seed, transport=transport,
                                     progress=progress)
        if subject.tiny:
            stages.update()
        stage("CPU")
        attn_mods = {r.name.rsplit(".", 1)[0] for r in energy.rows if r.op.startswith("attn_")}
        names = {r.name for r in energy.rows} | attn_mods | {a["name"] for a in accel["layers"]}
        cpu = cpu_times(subject.float_model, subject.int_model, subject.clip, batches, repeats)
        cpu_layers = layer_times(subject.float_model, subject.clip, names, repeats=layer_repeats, exclusive=attn_mods)
        order = execution_order(subject.float_model, subject.clip, names | {n + ".v_lif" for n in attn_mods})
        stages.update()
        stage("GPU")
        gpu = gpu_times(subject.float_model, subject.clip, gpu_batches, gpu_repeats)
        gpu_layers = None if gpu is None else gpu_layer_times(subject.float_model, subject.clip, names,
                                                              repeats=layer_repeats, exclusive=attn_mods)
        stages.update()
    finally:
        stages.close()
    layers = _per_layer(subject, energy, accel, cpu_layers, gpu_layers, order)
    return summarise(subject, energy, accel, samples, clock, cpu, gpu, layers, {
        "clip": clip, "repeats": repeats, "gpu_repeats": gpu_repeats, "batches": list(batches),
        "gpu_batches": list(gpu_batches), "seed": seed})


def summarise(subject: Subject, energy, accel: dict, samples: list[dict], clock: dict, cpu: dict, gpu: dict | None,
              layers: list[dict], settings: dict) -> dict:
    """Totals, latencies, ops per cycle, energy per clip and the issue's goals."""
    f = clock["mhz"] * 1e6
    lanes = accel["lanes"]
    busy = sum(r["cycles"] for r in accel["layers"])
    spike_layers = [r for r in accel["layers"] if r["kind"] in ("linear", "conv", "attention")]
    useful = sum(r["useful_ops"] for r in spike_layers)
    lane_cycles = sum(r["lane_cycles"] for r in spike_layers)
    if accel["link_bytes_by_class"]:
        lb = accel["link_bytes_by_class"]
        link = {"weights": lb.get("weights", 0), "params": lb.get("params", 0),
                "spikes": lb.get("activations", 0) + lb.get("results", 0), "control": lb.get("control", 0),
                "label": accel["label"] + ", Device.link_bytes"}
    else:
        link = {"weights": None, "params": None, "spikes": None, "control": None, "label": "modelled"}
    link["total"] = sum(r["bytes_in"] + r["bytes_out"] for r in accel["layers"])
    link["uart_s"] = link["total"] * UART_BITS_PER_BYTE / clock["uart_baud"]
    link["fast_link_s"] = link["total"] / FAST_LINK_BYTES_S
    engine_s = busy / f
    sops_spike = sum(r.sops for r in energy.rows if r.input_kind == "spike")
    snn_uj = energy.total_energy_pj * 1e-6
    cpu1 = cpu.get("1", {})
    accel_opc = useful / lane_cycles if lane_cycles else None
    gpu_summary = None
    if gpu is not None:
        gpu_summary = {}
        cores = gpu["device"]["cuda_cores"]
        for b, g in gpu["batches"].items():
            opc = sops_per_core_cycle(sops_spike, g["per_clip_s"], g.get("sm_clock_mhz"), cores)
            gpu_summary[b] = {"per_clip_s": g["per_clip_s"], "per_clip_cycles": g["per_clip_cycles"],
                              "sm_clock_mhz": g["sm_clock_mhz"], "sops_per_core_cycle": opc,
                              "energy_uj": g["power_w"] * g["per_clip_s"] * 1e6 if g.get("power_w") else None}
    gpu1 = (gpu_summary or {}).get("1")
    goals = {
        "cycle_model_exact": {
            "value": accel["cycle_model_exact"],
            "sampled_tokens_exact": (all(s["counters_equal"] and s["outputs_equal"] for s in samples)
                                     if samples else None),
            "met": bool(accel["cycle_model_exact"]) if accel["cycle_model_exact"] is not None else (
                all(s["counters_equal"] for s in samples) if samples else None)},
        "ops_per_lane_cycle_ge_0.85": {"value": accel_opc, "met": accel_opc >= 0.85 if accel_opc is not None else None},
        "ge_20x_gpu_sops_per_core_cycle": {
            "value": accel_opc / gpu1["sops_per_core_cycle"] if gpu1 and gpu1["sops_per_core_cycle"] else None,
            "met": (accel_opc >= 20 * gpu1["sops_per_core_cycle"]) if gpu1 and gpu1["sops_per_core_cycle"] else None},
        "latency_below_cpu": {"accel_s": engine_s, "cpu_float_s": cpu1.get("float_per_clip_s"),
                              "cpu_int_s": cpu1.get("int_per_clip_s"),
                              "met": (engine_s < min(cpu1["float_per_clip_s"], cpu1["int_per_clip_s"])
                                      if cpu1 else None)},
        "latency_below_gpu": {"accel_s": engine_s, "gpu_s": gpu1["per_clip_s"] if gpu1 else None,
                              "met": engine_s < gpu1["per_clip_s"] if gpu1 else None},
    }
    return {
        "model": subject.name, "tiny": subject.tiny, "weights": subject.weights, "settings": settings,
        "env": {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(), "cpu_mhz": cpu_mhz(),
                "cuda": torch.cuda.is_available()},
        "clock": clock,
        "energy_model": {"e_ac_pj": energy.e_ac_pj, "e_mac_pj": energy.e_mac_pj, "fpga_board_w": FPGA_BOARD_W,
                         "fpga_board_w_label": "assumed"},
        "totals": {"sops": energy.total_sops, "spike_sops": sops_spike, "macs": energy.total_macs,
                   "dense_macs": energy.total_dense_macs, "mean_firing_rate": energy.mean_firing_rate,
                   "snn_energy_uj": snn_uj},
        "accelerator": {
            "label": accel["label"], "lanes": lanes, "device": accel["device"], "busy_cycles": busy,
            "model_cycles": sum(r["model_cycles"] for r in accel["layers"]),
            "cycle_model_exact": accel["cycle_model_exact"], "logits_equal_golden": accel["logits_equal_golden"],
            "simulated_cycles": accel["simulated_cycles"], "wall_s": accel.get("wall_s"),
            "latency_s": engine_s, "latency_label": f"{accel['label']} cycles at {clock['mhz']} MHz ({clock['label']})",
            "useful_ops": useful, "lane_cycles": lane_cycles, "ops_per_lane_cycle": accel_opc,
            "link": link, "fpga_energy_uj": FPGA_BOARD_W * engine_s * 1e6,
            "fpga_energy_with_uart_uj": FPGA_BOARD_W * (engine_s + link["uart_s"]) * 1e6,
            "sampled_rtl": samples},
        "cpu": cpu, "gpu": gpu, "gpu_summary": gpu_summary,
        "gpu_note": None if gpu is not None else "no CUDA device on this machine: no GPU figures",
        "layers": layers, "goals": goals,
    }


def apply_clock(r: dict, clock: dict) -> dict:
    """Recompute the clock- and link-rate-dependent figures of a result for ``clock`` (:func:`board_clock`):
    the accelerator's latency, the UART time, the FPGA energy and the latency goals. In place; returns ``r``."""
    a, g = r["accelerator"], r["goals"]
    r["clock"] = clock
    engine_s = a["busy_cycles"] / (clock["mhz"] * 1e6)
    a["latency_s"] = engine_s
    a["latency_label"] = f"{a['label']} cycles at {clock['mhz']} MHz ({clock['label']})"
    a["link"]["uart_s"] = a["link"]["total"] * UART_BITS_PER_BYTE / clock["uart_baud"]
    a["fpga_energy_uj"] = FPGA_BOARD_W * engine_s * 1e6
    a["fpga_energy_with_uart_uj"] = FPGA_BOARD_W * (engine_s + a["link"]["uart_s"]) * 1e6
    cpu = g["latency_below_cpu"]
    cpu["accel_s"] = engine_s
    if cpu["cpu_float_s"] is not None:
        cpu["met"] = engine_s < min(cpu["cpu_float_s"], cpu["cpu_int_s"])
    gpu = g["latency_below_gpu"]
    gpu["accel_s"] = engine_s
    if gpu["gpu_s"] is not None:
        gpu["met"] = engine_s < gpu["gpu_s"]
    return r


def _fmt(v, spec: str = ",") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return format(v, spec)


_WHERE = {"accelerator": "acc", "host": "host", "fused": "fused"}


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e6


def format_report(r: dict) -> str:
    """Plain-text tables of a :func:`bench` result."""
    a, clk = r["accelerator"], r["clock"]
    lines = [f"{r['model']}: {r['weights']}",
             f"clock {clk['mhz']} MHz ({clk['label']}: {clk['source']}); accelerator P = {a['lanes']} lanes; "
             f"cycles {a['label']}"]
    head = (f"{'layer':34s} {'op':9s} {'where':5s} {'rate':>6s} {'SOPs':>11s} {'MACs':>11s} {'acc cycles':>10s} "
            f"{'label':14s} {'model ok':8s} {'util':>5s} {'CPU us':>9s} {'GPU us':>8s}")
    lines += ["", head, "-" * len(head)]
    for row in r["layers"]:
        ac = row.get("accel") or {}
        ok = "-" if ac.get("model_exact") is None else ("exact" if ac["model_exact"] else "DIFFERS")
        lines.append(
            f"{row['layer'][-34:]:34s} {row['op'][:9]:9s} {_WHERE[row['where']]:5s} "
            f"{_fmt(row['firing_rate'], '.3f'):>6s} {_fmt(row['sops']):>11s} {_fmt(row['macs']):>11s} "
            f"{_fmt(ac.get('cycles')):>10s} {(ac.get('label') or '-')[:14]:14s} {ok:8s} "
            f"{_fmt(ac.get('utilisation'), '.3f'):>5s} {_fmt(_us(row['cpu_float_s']), ',.0f'):>9s} "
            f"{_fmt(_us(row['gpu_float_s']), ',.0f'):>8s}")
    t, lk = r["totals"], a["link"]
    lines += ["-" * len(head),
              f"total: {t['sops']:,} SOPs ({t['spike_sops']:,} on spike inputs), {t['macs']:,} MACs, mean firing "
              f"rate {_fmt(t['mean_firing_rate'], '.4f')}, SNN energy {t['snn_energy_uj']:.3f} uJ (0.9/4.6 pJ model)",
              f"accelerator: {a['busy_cycles']:,} busy cycles ({a['label']}; cycle model {a['model_cycles']:,}, exact: "
              f"{_fmt(a['cycle_model_exact'])}) = {a['latency_s'] * 1e3:.3f} ms at {clk['mhz']} MHz; "
              f"{a['ops_per_lane_cycle'] or 0:.3f} useful ops per lane-cycle on the spike-driven layers",
              f"link: {lk['total']:,} bytes (weights {_fmt(lk['weights'])}, params {_fmt(lk['params'])}, "
              f"spikes+results {_fmt(lk['spikes'])}) = {lk['uart_s']:.2f} s at {clk['uart_baud']:,} baud, "
              f"{lk['fast_link_s'] * 1e3:.2f} ms at {FAST_LINK_BYTES_S / 1e6:.0f} MB/s",
              f"FPGA energy: {a['fpga_energy_uj']:.1f} uJ per clip at {FPGA_BOARD_W} W (assumed) x engine latency; "
              f"{a['fpga_energy_with_uart_uj'] / 1e3:.1f} mJ with the UART link time"]
    if a["simulated_cycles"]:
        lines.append(f"Verilator: {a['simulated_cycles']:,} simulated cycles (the host link at one byte per cycle "
                     f"included), {a['wall_s']:.1f} s wall")
    for s in a["sampled_rtl"]:
        lines.append(f"sampled on the RTL: {s['layer']} ({s['kind']}, t={s['time_step']}, {s['tokens']} tokens, fan-in "
                     f"{s['fan_in']}/{s['layer_fan_in']}, c_out {s['c_out']}/{s['layer_c_out']}, rate "
                     f"{s['firing_rate']:.3f}): busy {s['measured_busy']:,} measured, {s['modelled_busy']:,} modelled, "
                     f"counters equal {_fmt(s['counters_equal'])}, outputs equal {_fmt(s['outputs_equal'])}, "
                     f"util {_fmt(s['utilisation'], '.3f')}")
    for b, c in r["cpu"].items():
        lines.append(f"CPU ({r['env']['threads']} threads) batch {b}: float {c['float']['median_s'] * 1e3:,.1f} ms "
                     f"(min {c['float']['min_s'] * 1e3:,.1f}), integer {c['int']['median_s'] * 1e3:,.1f} ms "
                     f"(min {c['int']['min_s'] * 1e3:,.1f}); per clip {c['float_per_clip_s'] * 1e3:,.2f} / "
                     f"{c['int_per_clip_s'] * 1e3:,.2f} ms")
    if r["gpu_summary"]:
        d = r["gpu"]["device"]
        lines.append(f"GPU {d['name']} (cc {d['capability']}, {d['sms']} SMs x {d['cores_per_sm']} = "
                     f"{d['cuda_cores']} CUDA cores):")
        for b, g in r["gpu_summary"].items():
            lines.append(f"  batch {b}: {g['per_clip_s'] * 1e3:.3f} ms per clip, "
                         f"{_fmt(g['per_clip_cycles'], ',.0f')} cycles at {_fmt(g['sm_clock_mhz'], '.0f')} MHz, "
                         f"{_fmt(g['sops_per_core_cycle'], '.3g')} SOPs per CUDA-core-cycle, "
                         f"{_fmt(g['energy_uj'], ',.0f')} uJ")
    else:
        lines.append(f"GPU: {r['gpu_note']}")
    lines.append("goals:")
    for k, g in r["goals"].items():
        vals = ", ".join(f"{kk} {_fmt(v, '.4g') if isinstance(v, float) else _fmt(v)}"
                         for kk, v in g.items() if kk != "met")
        lines.append(f"  {k}: {'met' if g['met'] else 'NOT met' if g['met'] is False else 'n/a'} ({vals})")
    return "\n".join(lines)


def format_markdown(r: dict) -> str:
    """Markdown tables of a result (BENCHMARKS.md): the spike-driven device layers, the LIF total, the summary."""
    a, clk = r["accelerator"], r["clock"]
    lines = [f"**{r['model']}** ({r['weights']}); cycles: {a['label']}; P = {a['lanes']}; clock {clk['mhz']} MHz "
             f"({clk['label']})", "",
             "| layer | op | input firing rate | SOPs (float) | SOPs (integer, device) | cycles | cycle model | "
             "useful ops / lane-cycle |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    lif = [x for x in r["layers"] if x.get("accel") and x["op"] == "lif"]
    fused = {x.get("fused_into") for x in r["layers"]}
    dev_sops = sum(x["accel"]["sops"] for x in r["layers"] if x.get("accel"))
    for x in r["layers"]:
        ac = x.get("accel")
        if not ac or x["op"] == "lif":
            continue
        ok = "" if ac["model_exact"] is None else (" (=)" if ac["model_exact"] else " (differs)")
        sops = "(fused)" if x["layer"] in fused else f"{x['sops']:,}"
        lines.append(f"| {x['layer']} | {ac['kind']} | {_fmt(x['firing_rate'], '.3f')} | {sops} | {ac['sops']:,} | "
                     f"{ac['cycles']:,} | {ac['model_cycles']:,}{ok} | {_fmt(ac['utilisation'], '.3f')} |")
    if lif:
        cyc = sum(x["accel"]["cycles"] for x in lif)
        lines.append(f"| {len(lif)} LIF layers | lif | - | - | - | {cyc:,} | "
                     f"{sum(x['accel']['model_cycles'] for x in lif):,} | - |")
    lines.append(f"| **total** | | {_fmt(r['totals']['mean_firing_rate'], '.3f')} (neurons) | "
                 f"{r['totals']['spike_sops']:,} | {dev_sops:,} | "
                 f"**{a['busy_cycles']:,}** | {a['model_cycles']:,} | "
                 f"**{_fmt(a['ops_per_lane_cycle'], '.3f')}** |")
    return "\n".join(lines)


def plot_report(r: dict, out_dir: Path | str) -> Path | None:
    """Cycles per layer (accelerator vs CPU vs GPU), utilisation and firing rates: one PNG per model."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [x for x in r["layers"] if x["where"] != "fused" and x["op"] != "lif" and (x.get("accel") or x["sops"]
                                                                                     or x["macs"])]
    names = [x["layer"] for x in rows]
    idx = range(len(rows))
    cpu_hz = (r["env"]["cpu_mhz"] or 0) * 1e6
    fig, axes = plt.subplots(3, 1, figsize=(max(10, 0.28 * len(rows)), 11), sharex=True)
    ax = axes[0]
    acc = [(x.get("accel") or {}).get("cycles") or 0 for x in rows]
    w = 0.28
    a = r["accelerator"]
    ax.bar([i - w for i in idx], acc, w, label=f"accelerator ({a['label']}, P={a['lanes']})")
    if cpu_hz:
        ax.bar(list(idx), [(x["cpu_float_s"] or 0) * cpu_hz for x in rows], w,
               label=f"CPU float model ({r['env']['cpu_mhz']:.0f} MHz x time, {r['env']['threads']} threads)")
    g1 = (r["gpu"] or {}).get("batches", {}).get("1")
    if g1 and g1.get("sm_clock_mhz"):
        ax.bar([i + w for i in idx], [(x["gpu_float_s"] or 0) * g1["sm_clock_mhz"] * 1e6 for x in rows], w,
               label=f"GPU float model ({g1['sm_clock_mhz']:.0f} MHz SM clock x time)")
    else:
        ax.text(0.99, 0.95, "no GPU on this machine: no GPU bars", transform=ax.transAxes, ha="right", va="top")
    ax.set_yscale("log")
    ax.set_ylabel("cycles per clip")
    ax.set_title(f"{r['model']}: cycles per layer, batch 1 (weighted layers and attention; LIF layers in the JSON)")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    ax.bar(list(idx), [(x.get("accel") or {}).get("utilisation") or 0 for x in rows], color="tab:green")
    ax.axhline(0.85, color="k", ls="--", lw=0.8, label="goal 0.85")
    ax.set_ylabel("useful ops / lane-cycle")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.bar(list(idx), [x["firing_rate"] or 0 for x in rows], color="tab:orange")
    ax.set_ylabel("input firing rate")
    ax.set_xticks(list(idx))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    fig.tight_layout()
    path = out_dir / f"bench_{r['model']}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json(r: dict, out_dir: Path | str) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench_{r['model']}.json"
    path.write_text(json.dumps(r, indent=2))
    return path


def run_from_args(args) -> dict:
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    r = bench(args.model, clip=args.clip, transport=args.transport, batches=tuple(args.batches),
              gpu_batches=tuple(args.gpu_batches), repeats=args.repeats, gpu_repeats=args.gpu_repeats,
              layer_repeats=args.layer_repeats, sample_tokens=args.sample_tokens, sample_layers=args.sample_layers,
              report=args.report or BOARD_REPORT, progress=not args.json, seed=args.clip)
    path = write_json(r, args.out)
    fig = None if args.no_plot else plot_report(r, args.figures)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(format_report(r))
        print(f"\nwrote {path}" + (f" and {fig}" if fig else ""))
    return r


def main(argv: list[str] | None = None) -> int:
    from spikevid.cmd_bench import add_arguments

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--from-json", type=Path, help="print the tables and redraw the figure of a saved result "
                                                   "(with --report: at that report's clock and UART rate)")
    ap.add_argument("--markdown", action="store_true", help="with --from-json: the BENCHMARKS.md tables")
    args = ap.parse_args(argv)
    if args.from_json:
        r = json.loads(args.from_json.read_text())
        if args.report:  # a new bitstream report: redo the clock-dependent figures
            apply_clock(r, board_clock(args.report))
        print(format_markdown(r) if args.markdown else format_report(r))
        if args.markdown:
            return 0
        fig = None if args.no_plot else plot_report(r, args.figures)
        print(f"\nwrote {fig}" if fig else "")
        return 0
    r = run_from_args(args)
    return 0 if r["accelerator"]["logits_equal_golden"] is not False else 1


if __name__ == "__main__":
    raise SystemExit(main())
