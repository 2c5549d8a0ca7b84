"""``fairchem-prune slice`` / ``tools/slice_checkpoint.py``."""

from __future__ import annotations

import argparse

from fairchem_prune.blocks import block_list

DESCRIPTION = "slice a fairchem checkpoint (monolithic or hydra) to fewer blocks: an ordinary checkpoint of the reduced model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fairchem_prune.architectures import all_architectures, supported

    parser.add_argument("--checkpoint", required=True, help=f"fairchem checkpoint of a model fairchem-prune knows ({supported()})")
    blocks = parser.add_mutually_exclusive_group(required=True)
    blocks.add_argument("--num-blocks-kept", type=int, metavar="B", help="keep the first B blocks")
    blocks.add_argument("--kept-blocks", type=block_list, metavar="I,J,...",
                        help="keep these 0-based blocks (increasing), e.g. 0,1,2,4")
    choices = sorted({c for a in all_architectures() for c in a.mlp_init_choices})
    with_choice = ", ".join(a.label for a in all_architectures() if len(a.mlp_init_choices) > 1)
    parser.add_argument("--mlp-init", choices=choices, default="sliced",
                        help=f"first readout layer where its input depends on the blocks ({with_choice}): pre-trained "
                             "columns of the kept blocks (sliced) or fresh (random); other architectures have none")
    parser.add_argument("--output", required=True, help="path of the reduced checkpoint to write")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh initialisation with --mlp-init random")


def run(args: argparse.Namespace) -> None:
    from fairchem_prune.slicing import slice_checkpoint

    report = slice_checkpoint(
        args.checkpoint, args.output, num_blocks_kept=args.num_blocks_kept, kept_blocks=args.kept_blocks,
        mlp_init=args.mlp_init, force=args.force, seed=args.seed,
    )
    print(report.summary())
