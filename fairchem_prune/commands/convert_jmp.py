"""``fairchem-prune convert-jmp`` / ``tools/convert_jmp.py``."""

from __future__ import annotations

import argparse

DESCRIPTION = ("convert a JMP checkpoint (facebookresearch/JMP: jmp-s.pt, jmp-l.pt) into a self-contained fairchem "
               "checkpoint of gemnet_oc_reduced that reproduces JMP's outputs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fairchem_prune.jmp import TASK_CHOICES, WEIGHTS_CHOICES

    parser.add_argument("--checkpoint", required=True, help="JMP (PyTorch Lightning) checkpoint, e.g. jmp-l.pt")
    parser.add_argument("--output", required=True, help="path of the fairchem checkpoint to write")
    parser.add_argument("--task", default="oc20", metavar="{" + ",".join(TASK_CHOICES) + "}",
                        help="pre-training head that becomes the model's energy/force head, with its normalisation "
                             "as fairchem normalizers (eV, eV/Å); none: the backbone with a fresh head, JMP's "
                             "fine-tuning start (default: oc20)")
    parser.add_argument("--weights", default="ema", metavar="{" + ",".join(WEIGHTS_CHOICES) + "}",
                        help="ema: the weights JMP's fine-tuning loader builds (EMA, but raw out_blocks.N.layers "
                             "through the seq_energy_pre alias); ema-all: EMA everywhere; raw: the stored state dict "
                             "(default: ema)")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh head with --task none")


def run(args: argparse.Namespace) -> None:
    from fairchem_prune.jmp import convert_jmp

    report = convert_jmp(args.checkpoint, args.output, task=args.task, weights=args.weights, force=args.force,
                         seed=args.seed)
    print(report.summary())
