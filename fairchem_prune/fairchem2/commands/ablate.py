"""``fairchem-prune ablate`` beside fairchem-core 2.x."""

from __future__ import annotations

import argparse

from fairchem_prune.blocks import block_list

DESCRIPTION = ("fine-tune once per removed block of a fairchem 2 inference checkpoint (layer-by-layer ablation) "
               "with fairchem's own fine-tuning flow, and summarise")

EPILOG = """\
example:
  fairchem-prune ablate --template ft/uma_sm_finetune_template.yaml --checkpoint uma_6b.pt --out ablation \\
      --device cpu --steps 200 --relevance relevance.json

For each block: checkpoints/remove_b<i>.pt (sliced), configs/remove_b<i>.yaml, the run runs/remove_b<i>/
(fairchem -c, console output in logs/remove_b<i>.log), one after the other; then ablation.json,
ablation.md (table) and ablation.png. A re-run skips finished runs and resumes an interrupted one;
--force slices, writes and trains them all again."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--template", required=True,
                        help="uma_sm_finetune_template.yaml written by create_uma_finetune_dataset.py")
    parser.add_argument("--checkpoint", required=True, help="fairchem 2 inference checkpoint whose blocks are removed one at a time")
    parser.add_argument("--out", required=True, help="folder for the sliced checkpoints, configs, runs and summary")
    parser.add_argument("--blocks", type=block_list, metavar="I,J,...",
                        help="remove only these 0-based block positions of --checkpoint, one per run (default: every block)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="train each run this many epochs (template's default: 1)")
    length.add_argument("--steps", type=int, help="train each run this many optimizer steps (validates at the last)")
    parser.add_argument("--batch-size", type=int, help="systems per batch")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--layer-decay", type=float, metavar="F", help="layer-wise learning rates (see finetune-config)")
    parser.add_argument("--ema-decay", type=float, help="decay of the weight average that validation uses (fairchem: 0.999)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="job.device_type (template: cuda)")
    parser.add_argument("--metric", help="validation metric of the table, e.g. 'omol.val,forces,mae' (default: the "
                                         "forces MAE, else energy MAE, else the loss)")
    parser.add_argument("--relevance", help="relevance JSON (fairchem-prune relevance) to show beside the metrics")
    parser.add_argument("--relevance-dataset", help="data set of the relevance JSON (default: its first)")
    parser.add_argument("--write-only", action="store_true", help="slice and write the configs, do not train")
    parser.add_argument("--summarize", action="store_true", help="only collect the metrics of the runs finished so far")
    parser.add_argument("--force", action="store_true", help="slice, write and train every run again")


def run(args: argparse.Namespace) -> None:
    import warnings

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # torchtnt's import, not the user's
    from fairchem_prune.ablation_report import format_summary
    from fairchem_prune.fairchem2 import ablation

    runs = ablation.plan(args.checkpoint, args.out, args.blocks)
    if not args.summarize:
        ablation.prepare(runs, args.template, args.checkpoint, force=args.force, epochs=args.epochs,
                         steps=args.steps, batch_size=args.batch_size, lr=args.lr, device=args.device,
                         layer_decay=args.layer_decay, ema_decay=args.ema_decay)
        print(f"[ablation] {len(runs)} configs in {args.out}/configs")
        if args.write_only:
            return
        ablation.train_all(runs)
    summary = ablation.summarize(runs, args.out, args.metric, args.relevance, args.relevance_dataset)
    print(format_summary(summary))
    print(f"written {args.out}/ablation.json, {args.out}/ablation.md and {args.out}/ablation.png")
