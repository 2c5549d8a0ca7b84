"""``fairchem-prune relevance`` beside fairchem-core 2.x."""

from __future__ import annotations

import argparse

DESCRIPTION = ("GradCAM relevance of each block of a fairchem 2 inference checkpoint (UMA, eSEN) for one task's "
               "training loss, per data set")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="fairchem 2 inference checkpoint (MLIPInferenceCheckpoint) of an eSCN-MD model (UMA, eSEN)")
    parser.add_argument("--task", required=True,
                        help="the dataset whose loss is used: one of the checkpoint's (UMA: omol, omat, oc20, oc22, "
                             "oc25, odac, omc, omat_rattle)")
    parser.add_argument("--data", action="append", required=True, metavar="PATH",
                        help="labelled structures (energy, forces; stress where the task has it): an ASE-LMDB data set "
                             "(.aselmdb file or folder), an ASE .db, or any file ASE reads with a calculator's results "
                             "(extxyz); charge and spin from atoms.info (omol). Repeat for several data sets")
    parser.add_argument("--names", nargs="+", help="a name per --data (default: the file or folder names)")
    parser.add_argument("--num-samples", type=int, default=1000, help="structures per data set (seeded random subset)")
    parser.add_argument("--batch-size", type=int, default=8, help="structures per forward pass (bounds memory)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample selection")
    parser.add_argument("--raw", action="store_true",
                        help="score the raw weights (model_state_dict, what fine-tuning starts from) instead of the "
                             "EMA weights inference uses")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", default="relevance.json", help="JSON output (default: relevance.json)")
    parser.add_argument("--plot", help="PNG bar chart to write (default: beside --out)")
    parser.add_argument("--plot-branch", choices=("combined", "energy"), default="combined",
                        help="scores shown in the plot (one energy branch: combined = energy)")
    parser.add_argument("--force", action="store_true", help="overwrite existing --out / --plot files")


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from fairchem_prune.errors import PruneError, require_device
    from fairchem_prune.files import atomic_path, refuse_existing
    from fairchem_prune.gradcam import format_table, plot_relevance, write_relevance

    out = Path(args.out)
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    if plot == out:
        raise PruneError(f"--plot {plot} is the JSON output; give a .png path")
    for path in (out, plot):
        refuse_existing(path, args.force)
    require_device(args.device)
    for path in args.data:
        if not Path(path).exists():
            raise PruneError(f"data {path}: no such file or folder")
    from fairchem_prune.fairchem2.relevance import block_relevance

    result = block_relevance(args.checkpoint, args.data, args.task, names=args.names, num_samples=args.num_samples,
                             batch_size=args.batch_size, seed=args.seed, device=args.device, use_ema=not args.raw)
    with atomic_path(out) as tmp:
        write_relevance(result, tmp)
    plot_relevance(result, plot, branch=args.plot_branch)
    print(f"task {result['task']}, {result['weights']} weights")
    print(format_table(result, "combined") + "\n")
    print(f"written {out} and {plot}")
