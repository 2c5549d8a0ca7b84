"""``fairchem-prune relevance`` / ``tools/block_relevance.py``."""

from __future__ import annotations

import argparse

DESCRIPTION = "GradCAM relevance of each block's features for the task loss, per data set"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fairchem_prune.architectures import supported

    parser.add_argument("--checkpoint", required=True, help=f"fairchem checkpoint of a model fairchem-prune knows ({supported()})")
    parser.add_argument("--data", action="append", required=True, metavar="LMDB",
                        help="fairchem LMDB file or folder with energy/force labels; repeat for several data sets")
    parser.add_argument("--names", nargs="+", help="a name per --data (default: the LMDB folder names)")
    parser.add_argument("--num-samples", type=int, default=1000, help="structures per data set (seeded random subset)")
    parser.add_argument("--batch-size", type=int, default=8, help="structures per forward pass (bounds memory)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample selection")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", default="relevance.json", help="JSON output (default: relevance.json)")
    parser.add_argument("--plot", help="PNG bar chart to write (optional)")
    parser.add_argument("--plot-branch", choices=("combined", "energy", "forces"), default="combined",
                        help="scores shown in the plot")
    parser.add_argument("--force", action="store_true", help="overwrite existing --out / --plot files")


def run(args: argparse.Namespace) -> None:
    from fairchem_prune.errors import require_device
    from fairchem_prune.gradcam import format_table, plot_relevance, write_relevance
    from fairchem_prune.relevance import block_relevance

    from fairchem_prune.files import refuse_existing

    for path in filter(None, (args.out, args.plot)):
        refuse_existing(path, args.force)
    require_device(args.device)
    result = block_relevance(
        args.checkpoint, args.data, names=args.names, num_samples=args.num_samples, batch_size=args.batch_size,
        seed=args.seed, device=args.device,
    )
    write_relevance(result, args.out)
    if args.plot:
        plot_relevance(result, args.plot, branch=args.plot_branch)
    for branch in ("energy", "forces", "combined"):
        print(format_table(result, branch) + "\n")
    print(f"written {args.out}" + (f" and {args.plot}" if args.plot else ""))
