"""``fairchem-prune ablate`` / ``tools/ablate_blocks.py``."""

from __future__ import annotations

import argparse

DESCRIPTION = "fine-tune once per removed block (layer-by-layer ablation) and summarise"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="fine-tuning config to ablate (a fairchem YAML)")
    parser.add_argument("--pretrained", help="pre-trained checkpoint whose blocks are removed one at a time")
    parser.add_argument("--out", help="folder for the configs and runs")
    parser.add_argument("--submit", action="store_true", help="submit the runs to SLURM through fairchem's submitit launcher")
    parser.add_argument("--write-only", action="store_true", help="write and check the configs, do not launch")
    parser.add_argument("--force", action="store_true", help="overwrite configs written before")
    parser.add_argument("--summarize", metavar="DIR", help="collect the validation metrics of the runs under DIR")
    parser.add_argument("--relevance", help="with --summarize: relevance JSON to show beside the metrics")
    parser.add_argument("--relevance-dataset", help="data set of the relevance JSON (default: its first)")
    parser.add_argument("fairchem_args", nargs=argparse.REMAINDER,
                        help="after --: arguments passed to every fairchem run (e.g. -- --cpu --optim.max_epochs=5)")


def run(args: argparse.Namespace) -> None:
    from fairchem_prune import ablation
    from fairchem_prune.errors import PruneError

    if args.summarize:
        summary = ablation.summarize_ablation(args.summarize, args.relevance, args.relevance_dataset)
        ablation.plot_summary(summary, f"{args.summarize}/ablation.png")
        print(ablation.format_summary(summary))
        print(f"written {args.summarize}/ablation.json and {args.summarize}/ablation.png")
        return
    if not (args.config and args.pretrained and args.out):
        raise PruneError("give --config, --pretrained and --out (or --summarize DIR)")
    passthrough = args.fairchem_args[1:] if args.fairchem_args[:1] == ["--"] else args.fairchem_args
    runs = ablation.write_ablation_configs(args.config, args.pretrained, args.out, force=args.force)
    print(f"[ablation] wrote {len(runs)} configs to {args.out}/configs")
    if not args.write_only:
        ablation.launch_ablation(runs, args.out, passthrough, submit=args.submit)
