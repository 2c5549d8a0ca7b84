"""``fairchem-prune slice`` / ``tools/slice_checkpoint.py``."""

from __future__ import annotations

import argparse

DESCRIPTION = "slice a GemNet-OC or EquiformerV2 checkpoint to fewer interaction / transformer blocks"


def block_list(text: str) -> list[int]:
    """Parse ``0,1,2,4`` into ``[0, 1, 2, 4]``."""
    try:
        return [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated block indices like 0,1,2,4, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="fairchem checkpoint of gemnet_oc(_reduced), equiformer_v2(_reduced) or a hydra "
                             "model with one of their backbones")
    blocks = parser.add_mutually_exclusive_group(required=True)
    blocks.add_argument("--num-blocks-kept", type=int, metavar="B",
                        help="keep the first B interaction (GemNet-OC) / transformer (EquiformerV2) blocks")
    blocks.add_argument("--kept-blocks", type=block_list, metavar="I,J,...",
                        help="keep these 0-based blocks (increasing), e.g. 0,1,2,4")
    parser.add_argument("--mlp-init", choices=("sliced", "random"), default="sliced",
                        help="GemNet-OC's first FinalMLP layer: pre-trained columns of the kept blocks (sliced) or "
                             "fresh (random); EquiformerV2 has no FinalMLP")
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
