"""``fairchem-prune demo`` beside fairchem-core 2.x."""

from __future__ import annotations

import argparse

DESCRIPTION = ("run the paper's study end to end on a small UMA-architecture teacher and the embedded demo data, with "
               "fairchem 2's own training: relevance, block reduction with and without distillation, fine-tuning, MD, "
               "efficiency, report.md")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="working folder; finished stages in it are skipped (default: demo_out)")
    parser.add_argument("--data", help="demo data folder in fairchem 2's format (default: generated once into "
                        "~/.cache/fairchem-prune/demo_data/)")
    parser.add_argument("--teacher", help="a fairchem 2 inference checkpoint with the tasks omol and oc20 to reduce "
                        "(default: the teacher shipped for the default demo data, else one trained on the mix)")
    parser.add_argument("--train-teacher", action="store_true", help="pre-train the teacher on the mix even when one is shipped")
    parser.add_argument("--quick", action="store_true", help="tiny data, teacher and budgets: checks the pipeline in a few minutes")
    parser.add_argument("--force", action="store_true", help="redo finished stages instead of skipping them")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")


def run(args: argparse.Namespace) -> None:
    from fairchem_prune.fairchem2.demo import run_demo

    run_demo(out=args.out, quick=args.quick, force=args.force, device=args.device, data=args.data,
             teacher=args.teacher, train_teacher=args.train_teacher)
