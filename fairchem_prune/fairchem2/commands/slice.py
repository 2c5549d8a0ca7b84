"""``fairchem-prune slice`` beside fairchem-core 2.x."""

from __future__ import annotations

import argparse

from fairchem_prune.blocks import block_list

DESCRIPTION = ("slice a fairchem 2 inference checkpoint (UMA, eSEN) to fewer blocks: an ordinary inference "
               "checkpoint of the reduced model, raw and EMA weights")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="fairchem 2 inference checkpoint (MLIPInferenceCheckpoint) of an eSCN-MD model: UMA "
                             "(uma-s / uma-m, e.g. from fairchem's Hugging Face cache) or eSEN")
    blocks = parser.add_mutually_exclusive_group(required=True)
    blocks.add_argument("--num-blocks-kept", type=int, metavar="B", help="keep the first B blocks")
    blocks.add_argument("--kept-blocks", type=block_list, metavar="I,J,...",
                        help="keep these 0-based blocks (increasing), e.g. 0,1,3,5")
    parser.add_argument("--output", required=True, help="path of the reduced checkpoint to write")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")


def run(args: argparse.Namespace) -> None:
    from fairchem_prune.fairchem2.slicing import slice_inference_checkpoint

    report = slice_inference_checkpoint(args.checkpoint, args.output, num_blocks_kept=args.num_blocks_kept,
                                        kept_blocks=args.kept_blocks, force=args.force)
    print(report.summary())
