"""``fairchem-prune demo`` / ``python -m fairchem_prune.demo``."""

from __future__ import annotations

import argparse

DESCRIPTION = ("run the paper's study end to end on the embedded demo data: relevance, block reduction with and "
               "without distillation, fine-tuning, efficiency, report.md")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="working folder; finished stages in it are skipped (default: demo_out)")
    parser.add_argument("--data", help="demo data folder written by tools/make_demo_data.py (default: generated once "
                        "into ~/.cache/fairchem-prune/demo_data/)")
    from fairchem_prune.architectures import all_architectures

    labels = ", ".join(a.label for a in all_architectures())
    parser.add_argument("--teacher", help=f"pre-trained checkpoint to reduce, monolithic or hydra ({labels}; default: the "
                        "teacher shipped for the default demo data, else one trained on the mix)")
    parser.add_argument("--train-teacher", action="store_true", help="pre-train the teacher on the mix even when one is shipped")
    parser.add_argument("--quick", action="store_true", help="tiny data, teacher and budgets: checks the pipeline in about a minute")
    parser.add_argument("--force", action="store_true", help="redo finished stages instead of skipping them")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--workers", type=int, help="training runs at a time (default: 2 on CPU, 1 on CUDA)")
    parser.add_argument("--kd-seeds", type=int, default=1,
                        help="distillation runs per block count; Table 1 gives their mean and spread (default: 1)")
    parser.add_argument("--full", action="store_true",
                        help="fine-tune the whole sweep (BR, BR/RandomMLP and BR+KD at every reduced count) besides the "
                             "default models (the teacher-size one; BR, BR+KD and scratch at one count; 3 seeds each)")
    parser.add_argument("--kd-options", action="store_true",
                        help="also distil with each option beyond the paper (rattle, teacher MD, Jacobian rows, per-atom "
                             "energies) at the second block count, with its cost per step")


def run(args: argparse.Namespace) -> None:
    from fairchem_prune.demo import run_demo

    run_demo(out=args.out, quick=args.quick, force=args.force, device=args.device, data=args.data,
             teacher=args.teacher, train_teacher=args.train_teacher, workers=args.workers, kd_seeds=args.kd_seeds,
             kd_options=args.kd_options, sweep=args.full)
