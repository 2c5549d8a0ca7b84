"""Command-line entry points: ``fairchem-prune <command>`` and the scripts in ``tools/``.

Commands live in :mod:`fairchem_prune.commands` (one module each, imported only when used). A
:class:`PruneError` is printed as one line ``error: ...`` on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from fairchem_prune.errors import PruneError

#: command name -> module in fairchem_prune.commands
COMMANDS = {
    "convert-jmp": "convert_jmp",
    "slice": "slice",
    "demo": "demo",
    "prepare-dataset": "prepare_dataset",
    "make-demo-data": "make_demo_data",
    "relevance": "relevance",
    "ablate": "ablate",
    "benchmark": "benchmark",
    "distill-cost": "distill_cost",
    "md-check": "md_check",
    "compress": "compress",
}


def _command(name: str):
    return importlib.import_module(f"fairchem_prune.commands.{COMMANDS[name]}")


def run(command, args: argparse.Namespace) -> int:
    """Run ``command.run(args)``; a user-facing error becomes one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        command.run(args)
    except PruneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def tool_main(name: str, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Entry point of one command as a stand-alone script (``tools/*.py``)."""
    command = _command(name)
    parser = argparse.ArgumentParser(prog=prog, description=command.DESCRIPTION)
    command.add_arguments(parser)
    return run(command, parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """``fairchem-prune <command> ...``"""
    parser = argparse.ArgumentParser(prog="fairchem-prune", description="Smaller, faster FAIRChem GNN potentials.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        command = _command(name)
        command.add_arguments(sub.add_parser(name, help=command.DESCRIPTION, description=command.DESCRIPTION))
    args = parser.parse_args(argv)
    return run(_command(args.command), args)


if __name__ == "__main__":
    sys.exit(main())
