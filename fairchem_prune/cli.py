"""Command-line entry points: ``fairchem-prune <command>`` and the scripts in ``tools/``.

Each command parses its arguments and calls one library function. A :class:`PruneError` is printed
as one line ``error: ...`` on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from fairchem_prune.errors import PruneError


def _block_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated block indices like 0,1,2,4, got {text!r}") from None


def add_slice_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--checkpoint", required=True, help="fairchem checkpoint of gemnet_oc, gemnet_oc_reduced or a GemNet-OC hydra model")
    blocks = parser.add_mutually_exclusive_group(required=True)
    blocks.add_argument("--num-blocks-kept", type=int, metavar="B", help="keep the first B interaction blocks")
    blocks.add_argument("--kept-blocks", type=_block_list, metavar="I,J,...",
                        help="keep these 0-based interaction blocks (increasing), e.g. 0,1,2,4")
    parser.add_argument("--mlp-init", choices=("sliced", "random"), default="sliced",
                        help="first FinalMLP layer: pre-trained columns of the kept blocks (sliced) or fresh (random)")
    parser.add_argument("--output", required=True, help="path of the reduced checkpoint to write")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh initialisation with --mlp-init random")
    return parser


def slice_command(args: argparse.Namespace) -> None:
    from fairchem_prune.slicing import slice_checkpoint

    report = slice_checkpoint(
        args.checkpoint, args.output, num_blocks_kept=args.num_blocks_kept, kept_blocks=args.kept_blocks,
        mlp_init=args.mlp_init, force=args.force, seed=args.seed,
    )
    print(report.summary())


def demo_command(args: argparse.Namespace) -> None:
    from fairchem_prune.demo import run_demo

    run_demo(out=args.out, quick=args.quick, force=args.force, device=args.device)


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", default="demo_out", help="working folder (default: demo_out)")
    parser.add_argument("--quick", action="store_true", help="a few epochs only: checks the pipeline in ~2 minutes")
    parser.add_argument("--force", action="store_true", help="redo finished stages instead of skipping them")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    return parser


def run(command: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> int:
    """Run ``command``; a user-facing error becomes one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        command(args)
    except PruneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


COMMANDS = {
    "slice": (add_slice_arguments, slice_command, "slice a GemNet-OC checkpoint to fewer interaction blocks"),
    "demo": (add_demo_arguments, demo_command, "run the method end to end on the embedded demo data"),
}


def tool_main(name: str, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Entry point of one command as a stand-alone script (``tools/*.py``)."""
    add_arguments, command, description = COMMANDS[name]
    parser = add_arguments(argparse.ArgumentParser(prog=prog, description=description))
    return run(command, parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """``fairchem-prune <command> ...``"""
    parser = argparse.ArgumentParser(prog="fairchem-prune", description="Smaller, faster FAIRChem GNN potentials.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, command, description) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=description, description=description)).set_defaults(func=command)
    args = parser.parse_args(argv)
    return run(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
