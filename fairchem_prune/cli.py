"""Command-line entry points: ``fairchem-prune <command>`` and the scripts in ``tools/``.

Commands live in one module each, imported only when used: :mod:`fairchem_prune.commands` beside
fairchem-core 1.x, :mod:`fairchem_prune.fairchem2.commands` beside 2.x (:mod:`fairchem_prune.hosts`
says which). A :class:`PruneError` is printed as one line ``error: ...`` on stderr with exit status 2,
and so is a command of the other host. Dependencies' noise stays off the console: torch's warning about
``weights_only=False`` on fairchem's own ``torch.load`` calls is ignored, and a command package's
``before_command()`` (if it has one) runs first.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
import warnings
from collections.abc import Sequence

from fairchem_prune import hosts
from fairchem_prune.errors import PruneError


class ArgumentParser(argparse.ArgumentParser):
    """argparse with Python 3.13's reading of a leading ``-``: a word that starts with ``-`` and a digit
    (``--budget -5%``, ``--lr -1e-3``) is a value, which the command then checks; Python 3.11's argparse
    takes ``-5%`` for an unknown option and stops with "expected one argument"."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"-\.?\d")  # 3.13's pattern; subparsers share the class


def _command(name: str):
    return importlib.import_module(hosts.command_module(name))


def run(command, args: argparse.Namespace) -> int:
    """Run ``command.run(args)``; a user-facing error becomes one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    warnings.filterwarnings("ignore", message=".*weights_only=False.*", category=FutureWarning)
    before = getattr(importlib.import_module(command.__package__), "before_command", None)
    if before is not None:
        before()
    try:
        command.run(args)
    except PruneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _host_command(name: str):
    """The command module of ``name`` on the installed host; PruneError naming the environment where
    only the other host has it."""
    elsewhere = hosts.other_host_only(name)
    if elsewhere is not None:
        raise PruneError(hosts.run_elsewhere(f"fairchem-prune {name}", elsewhere))
    return _command(name)


def tool_main(name: str, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Entry point of one command as a stand-alone script (``tools/*.py``)."""
    try:
        command = _host_command(name)
    except PruneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    parser = ArgumentParser(prog=prog, description=command.DESCRIPTION)
    command.add_arguments(parser)
    return run(command, parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """``fairchem-prune <command> ...``"""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        host = hosts.installed()
        if argv and not argv[0].startswith("-"):
            _host_command(argv[0])
    except PruneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    parser = ArgumentParser(prog="fairchem-prune",
                            description=f"Smaller, faster FAIRChem GNN potentials (beside fairchem-core {host}.x).")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in hosts.COMMANDS[host]:
        command = _command(name)
        command.add_arguments(sub.add_parser(name, help=command.DESCRIPTION, description=command.DESCRIPTION))
    args = parser.parse_args(argv)
    return run(_command(args.command), args)


if __name__ == "__main__":
    sys.exit(main())
