"""Board tops and the named build configurations (``bitstreams/README.md``).

A board top is :class:`rtl.serial_top.SerialAccelerator` on the board's USB-serial (FTDI) pins, its
``sync`` clock from the board oscillator through the FPGA's PLL, its reset from the PLL lock and a
button, and three LEDs (heartbeat, activity, error). The timing constraint of ``sync`` is the one
nextpnr derives from the oscillator's (``amaranth_boards``) through the PLL's dividers; the flow
checks that it equals ``clock_hz``. Two boards, through ``amaranth_boards``:

* **ULX3S 85F** (``ULX3S_85F_Platform``, LFE5U-85F-6BG381): 25 MHz oscillator -> ``EHXPLLL``;
  FT231X UART (up to 3 Mbaud); reset = the FIRE 1 button; LEDs 0..2.
* **iCEBreaker** (``ICEBreakerPlatform``, iCE40UP5K-SG48): 12 MHz oscillator on a PLL pad ->
  ``SB_PLL40_PAD``; FT2232H UART (channel B); reset = the user button; green / red LEDs.

:data:`CONFIGS` names the configurations ``spikevid synth <name>`` / ``nox -s bitstreams -- <name>``
build: the accelerator's sizes (:class:`rtl.accelerator.AcceleratorConfig` fields), the target clock
(a field: raise it when the design gets faster) and the baud rate. The baud rate must divide the
clock exactly (the UART divisor is an integer; FTDI chips make 3 Mbaud / n exactly).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from amaranth.hdl import ClockDomain, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from rtl.accelerator import AcceleratorConfig
from rtl.serial_top import SerialAccelerator, default_fifo_depth

__all__ = ["BoardConfig", "CONFIGS", "get_config", "ecp5_pll", "ice40_pll", "ULX3STop", "ICEBreakerTop",
           "make_platform", "make_top"]


@dataclass(frozen=True)
class BoardConfig:
    """One named build: board, target clock, UART rate and the accelerator's sizes."""

    name: str
    board: str                       # "ulx3s-85f" | "icebreaker"
    clock_hz: int                    # the sync clock (the PLL output) and its timing constraint
    baud: int                        # the UART rate; clock_hz % baud == 0
    accel: dict = field(default_factory=dict)   # AcceleratorConfig fields besides clock_hz / frame_timeout
    fifo_depth: int | None = None    # RX FIFO bytes (default rtl.serial_top.default_fifo_depth)
    description: str = ""

    def __post_init__(self) -> None:
        if self.clock_hz % self.baud:
            raise ValueError(f"{self.name}: baud {self.baud} does not divide the clock {self.clock_hz}")
        self.accel_config()   # validates the sizes

    @property
    def divisor(self) -> int:
        return self.clock_hz // self.baud

    def accel_config(self) -> AcceleratorConfig:
        """The accelerator's configuration: INFO reports the real clock; a frame times out after 50 ms
        without a byte (a USB-serial host can pause for milliseconds inside a write)."""
        return AcceleratorConfig(**{"clock_hz": self.clock_hz, "frame_timeout": self.clock_hz // 20, **self.accel})

    @property
    def rx_fifo_depth(self) -> int:
        return self.fifo_depth or default_fifo_depth(self.accel_config().max_payload)

    def with_clock(self, clock_hz: int, baud: int | None = None) -> BoardConfig:
        return dataclasses.replace(self, clock_hz=clock_hz, baud=baud or self.baud)

    def summary(self) -> dict:
        """The JSON-able description the reports carry."""
        return {"name": self.name, "board": self.board, "clock_hz": self.clock_hz, "uart_baud": self.baud,
                "uart_divisor": self.divisor, "rx_fifo_depth": self.rx_fifo_depth,
                **dataclasses.asdict(self.accel_config())}


CONFIGS: dict[str, BoardConfig] = {c.name: c for c in (
    BoardConfig(
        "ulx3s-85f", "ulx3s-85f", clock_hz=45_000_000, baud=3_000_000,
        description="the full design (AcceleratorConfig defaults: P = 16, in_max 256, 1024 weight rows, "
                    "D_MAX 32, N_MAX 256, max_payload 1024) at 45 MHz, 3 Mbaud"),
    BoardConfig(
        "ulx3s-85f-p8", "ulx3s-85f", clock_hz=45_000_000, baud=3_000_000,
        accel={"lanes": 8, "in_max": 128, "weight_rows": 256, "param_channels": 128, "membrane_rows": 256,
               "att_dim_max": 16, "att_max_tokens": 64, "max_payload": 512},
        description="the smallest ECP5 configuration (P = 8; the CI smoke synthesis)"),
    BoardConfig(
        "icebreaker", "icebreaker", clock_hz=24_000_000, baud=1_000_000,
        accel={"lanes": 2, "in_max": 32, "weight_rows": 256, "param_channels": 64, "membrane_rows": 128,
               "att_dim_max": 0, "att_max_tokens": 0, "max_payload": 256, "linear_queue": 0},
        description="the reduced configuration for the iCE40 UP5K (P = 2, in_max 32, no attention engine: the host "
                    "runs attention; no spike-accumulate command queue) at 24 MHz, 1 Mbaud"),
)}


def get_config(name: str) -> BoardConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown configuration {name!r}; known: {', '.join(CONFIGS)}") from None


# --------------------------------------------------------------------------------------------
# PLL parameter search
# --------------------------------------------------------------------------------------------

def ecp5_pll(fin: float, fout: float) -> dict[str, int | float]:
    """``EHXPLLL`` dividers for ``fout`` from ``fin`` (feedback from CLKOP), as ``ecppll`` picks them:
    PFD 3.125..400 MHz, VCO 400..800 MHz; the exact ``fout`` or the closest, then the VCO nearest
    600 MHz. Returns the dividers and the frequency reached (``fout``)."""
    best = None
    for ref in range(1, 129):
        pfd = fin / ref
        if not 3.125e6 <= pfd <= 400e6:
            continue
        for fb in range(1, 81):
            f = pfd * fb
            for op in range(1, 129):
                vco = f * op
                if 400e6 <= vco <= 800e6:
                    key = (round(abs(f - fout)), abs(vco - 600e6))   # exact first, then a VCO near 600 MHz
                    if best is None or key < best[0]:
                        best = (key, {"CLKI_DIV": ref, "CLKFB_DIV": fb, "CLKOP_DIV": op, "fout": f, "fvco": vco})
    if best is None:
        raise ValueError(f"no EHXPLLL setting for {fout / 1e6} MHz from {fin / 1e6} MHz")
    return best[1]


def ice40_pll(fin: float, fout: float) -> dict[str, int | float]:
    """``SB_PLL40_*`` dividers (SIMPLE feedback), as ``icepll`` picks them: PFD 10..133 MHz, VCO
    533..1066 MHz, ``fout = fin (DIVF + 1) / ((DIVR + 1) 2**DIVQ)``; with ``FILTER_RANGE``."""
    best = None
    for divr in range(16):
        pfd = fin / (divr + 1)
        if not 10e6 <= pfd <= 133e6:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533e6 <= vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f = vco / (1 << divq)
                err = abs(f - fout)
                if best is None or err < best[0] - 1e-3:
                    rng = next(i for i, lim in enumerate((17e6, 26e6, 44e6, 66e6, 101e6), 1) if pfd < lim) \
                        if pfd < 101e6 else 6
                    best = (err, {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": rng, "fout": f,
                                  "fvco": vco})
    if best is None:
        raise ValueError(f"no SB_PLL40 setting for {fout / 1e6} MHz from {fin / 1e6} MHz")
    return best[1]


def _check_exact(pll: dict, want: int, what: str) -> None:
    if abs(pll["fout"] - want) > 1.0:
        raise ValueError(f"{what}: the PLL makes {pll['fout'] / 1e6:.4f} MHz, not {want / 1e6:.4f} MHz; "
                         f"choose a reachable clock_hz")


# --------------------------------------------------------------------------------------------
# Board tops
# --------------------------------------------------------------------------------------------

class _BoardTop(Elaboratable):
    def __init__(self, cfg: BoardConfig):
        self.cfg = cfg

    def core(self) -> SerialAccelerator:
        return SerialAccelerator(self.cfg.accel_config(), divisor=self.cfg.divisor, fifo_depth=self.cfg.rx_fifo_depth)


def _uart(m: Module, platform, core: SerialAccelerator) -> None:
    uart = platform.request("uart", 0, dir={sub.name: "-" for sub in platform.lookup("uart", 0).ios})
    m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
    m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
    m.d.comb += [core.uart_rx.eq(rx.i), tx.o.eq(core.uart_tx)]


class ULX3STop(_BoardTop):
    """ULX3S 85F: 25 MHz -> EHXPLLL -> ``sync``; reset while the PLL is unlocked or FIRE 1 is pressed."""

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.clk25 = clk25 = io.Buffer("i", platform.request("clk25", 0, dir="-"))
        pll = ecp5_pll(25e6, self.cfg.clock_hz)
        _check_exact(pll, self.cfg.clock_hz, self.cfg.name)
        m.domains.sync = cd = ClockDomain("sync")
        locked = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI="25", a_FREQUENCY_PIN_CLKOP=f"{pll['fout'] / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=pll["CLKI_DIV"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=pll["CLKOP_DIV"],
            p_CLKOP_CPHASE=pll["CLKOP_DIV"] - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            p_CLKFB_DIV=pll["CLKFB_DIV"],
            i_RST=0, i_STDBY=0, i_CLKI=clk25.i, o_CLKOP=cd.clk, i_CLKFB=cd.clk,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
        m.submodules.button = button = io.Buffer("i", platform.request("button_fire", 0, dir="-"))
        m.submodules.rst_sync = ResetSynchronizer(~locked | button.i, domain="sync")
        m.submodules.core = core = self.core()
        _uart(m, platform, core)
        for i, sig in enumerate((core.heartbeat, core.activity, core.error)):
            m.submodules[f"led{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
            m.d.comb += led.o.eq(sig)
        return m


class ICEBreakerTop(_BoardTop):
    """iCEBreaker: 12 MHz on the PLL pad -> SB_PLL40_PAD -> ``sync``; reset while unlocked or the user
    button is pressed. LEDs: green = heartbeat, red = error (the activity LED is on the break-off PMOD)."""

    def elaborate(self, platform) -> Module:
        m = Module()
        pad = platform.request("clk12", 0, dir="-")
        pll = ice40_pll(12e6, self.cfg.clock_hz)
        _check_exact(pll, self.cfg.clock_hz, self.cfg.name)
        m.domains.sync = cd = ClockDomain("sync")
        locked = Signal()
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE", p_DIVR=pll["DIVR"], p_DIVF=pll["DIVF"], p_DIVQ=pll["DIVQ"],
            p_FILTER_RANGE=pll["FILTER_RANGE"],
            io_PACKAGEPIN=pad.io, i_RESETB=1, i_BYPASS=0, o_PLLOUTGLOBAL=cd.clk, o_LOCK=locked)
        m.submodules.button = button = io.Buffer("i", platform.request("button", 0, dir="-"))
        m.submodules.rst_sync = ResetSynchronizer(~locked | button.i, domain="sync")
        m.submodules.core = core = self.core()
        _uart(m, platform, core)
        for name, sig in (("led_g", core.heartbeat), ("led_r", core.error)):
            m.submodules[name] = led = io.Buffer("o", platform.request(name, 0, dir="-"))
            m.d.comb += led.o.eq(sig)
        return m


def make_platform(cfg: BoardConfig):
    if cfg.board == "ulx3s-85f":
        from amaranth_boards.ulx3s import ULX3S_85F_Platform

        return ULX3S_85F_Platform()
    if cfg.board == "icebreaker":
        from amaranth_boards.icebreaker import ICEBreakerPlatform

        return ICEBreakerPlatform()
    raise ValueError(f"unknown board {cfg.board!r}")


def make_top(cfg: BoardConfig):
    return {"ulx3s-85f": ULX3STop, "icebreaker": ICEBreakerTop}[cfg.board](cfg)
