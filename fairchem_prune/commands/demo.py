"""``fairchem-prune demo``."""

from __future__ import annotations

import argparse

DESCRIPTION = "run the method end to end on the embedded demo data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="working folder (default: demo_out)")
    parser.add_argument("--quick", action="store_true", help="a few epochs only: checks the pipeline in about a minute")
    parser.add_argument("--force", action="store_true", help="redo finished stages instead of skipping them")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")


def run(args: argparse.Namespace) -> None:
    from fairchem_prune.demo import run_demo

    run_demo(out=args.out, quick=args.quick, force=args.force, device=args.device)
