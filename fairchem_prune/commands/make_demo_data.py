"""``fairchem-prune make-demo-data`` / ``tools/make_demo_data.py``."""

from __future__ import annotations

import argparse

DESCRIPTION = "generate the demo data: an xTB/EMT pre-training mix and downstream raw files in the real formats"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (pretrain/ LMDBs and raw/ files)")
    parser.add_argument("--size", choices=("small", "standard", "medium"), default="standard",
                        help="standard (the demo's, default): 4464 pre-training structures, ~1 minute on 2 cores; "
                             "small: 893, ~40 s; medium: standard's mix and 2.5-4x larger downstream files")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything random (default 0)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")


def run(args: argparse.Namespace) -> None:
    from fairchem_prune.demo.generation import make_demo_data

    counts = make_demo_data(args.out, size=args.size, seed=args.seed, force=args.force)
    print("\n".join(f"{args.out}/{part}: {count}" for part, count in counts.items()))
