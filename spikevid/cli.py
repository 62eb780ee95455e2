"""``spikevid`` console command. Each subcommand lives in its own module with ``register(sub)``."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "spikevid.cmd_model",
    "spikevid.cmd_energy",
    "spikevid.cmd_train",
    "spikevid.cmd_golden",
    "spikevid.cmd_run",
    "spikevid.cmd_eval",
    "spikevid.cmd_synth",
    "spikevid.cmd_bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikevid", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as e:
        print(f"spikevid {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
