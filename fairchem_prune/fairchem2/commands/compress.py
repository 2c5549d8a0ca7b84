"""``fairchem-prune compress`` beside fairchem-core 2.x."""

from __future__ import annotations

import argparse

from fairchem_prune.blocks import count_list

DESCRIPTION = ("fine-tune every block count of a fairchem 2 inference checkpoint (UMA, eSEN) with fairchem's own "
               "fine-tuning flow, pick the fewest blocks (or, --pick fastest, the fastest by trustworthy "
               "measurements) within an accuracy budget of the full model and fine-tune it to the end")

EPILOG = """\
example:
  fairchem-prune compress --checkpoint uma-s-1p1 --template ft/uma_sm_finetune_template.yaml \\
      --steps 500 --budget 5% --out compress_out --device cuda

--template is what fairchem's create_uma_finetune_dataset.py wrote (its data YAML beside it). Under --out:
relevance.json/.png, checkpoints/ (sliced), configs/, runs/ (fairchem -c, console output in logs/),
benchmark.json, compress.json, report.md, pareto.png and compressed_<pick>.pt. A re-run skips every
finished run and resumes an interrupted one; another --budget re-picks from the recorded runs.

With --distill kd/uma_sm_finetune_template.yaml (create_uma_finetune_dataset.py on pre-training
structures, e.g. --uma-task omat), every count is also distilled from the full model on them
(runs/distill_<k>b: teacher targets + node-to-node L1, as distill-config) before its fine-tune (kd_<k>b)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fairchem_prune.compress.budget import PICKS
    from fairchem_prune.fairchem2.compress import ORDERS

    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--checkpoint", required=True, help="fairchem 2 inference checkpoint (a path, or a model name "
                        "in fairchem's cache such as uma-s-1p1)")
    parser.add_argument("--template", required=True,
                        help="uma_sm_finetune_template.yaml written by create_uma_finetune_dataset.py (the task and its data)")
    parser.add_argument("--budget", required=True, help="allowed validation error above the full model's: relative "
                        "(5%%) or absolute with a unit (2meV/A, 10meV)")
    parser.add_argument("--pick", choices=PICKS, default="fewest",
                        help="which candidate within the budget: fewest blocks (default), or fastest: the highest "
                             "measured throughput whose benchmark figure is not flagged (where every one is flagged, "
                             "fewest, and the report says so); another --pick re-picks from the recorded runs")
    parser.add_argument("--out", required=True, help="working folder; finished steps in it are skipped on a re-run")
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="fine-tuning steps of every candidate")
    length.add_argument("--epochs", type=int, help="fine-tuning epochs of every candidate")
    final = parser.add_mutually_exclusive_group()
    final.add_argument("--final-steps", type=int, help="steps of the pick's final fine-tune (default: the template's length)")
    final.add_argument("--final-epochs", type=int, help="epochs of the pick's final fine-tune")
    parser.add_argument("--blocks", type=count_list, help="block counts to try, e.g. 3,2 (default: every count below the checkpoint's)")
    parser.add_argument("--order", choices=ORDERS, default="relevance",
                        help="which blocks a k-block candidate keeps: the k most relevant by GradCAM (default) or the first k")
    parser.add_argument("--task", help="the dataset whose loss relevance scores (default: the template's, e.g. omol)")
    parser.add_argument("--relevance-samples", type=int, default=200, help="training structures the relevance is computed on")
    parser.add_argument("--batch-size", type=int, help="systems per batch (default: the template's)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the template's)")
    parser.add_argument("--ema-decay", type=float, help="decay of the weight average validation uses (fairchem: 0.999)")
    parser.add_argument("--benchmark-repeats", type=int, default=3, help="timed passes per model (default 3)")
    parser.add_argument("--distill", metavar="TEMPLATE",
                        help="the template create_uma_finetune_dataset.py wrote for pre-training structures (of one "
                             "of the checkpoint's datasets): also try each count distilled from the full model on "
                             "them (kd_<k>b), then fine-tuned as the others")
    parser.add_argument("--distill-samples", type=int, metavar="N",
                        help="structures each distillation sees (default: one pass over --distill's training data)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the relevance subset")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")


def run(args: argparse.Namespace) -> None:
    import warnings
    from pathlib import Path

    from fairchem_prune.fairchem2.compress import CompressSettings, run_compress

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # torchtnt's import, not the user's
    checkpoint = Path(args.checkpoint)
    settings = CompressSettings(
        checkpoint=str(checkpoint.resolve()) if checkpoint.exists() else args.checkpoint,
        template=str(Path(args.template).resolve()), steps=args.steps, epochs=args.epochs, blocks=args.blocks,
        order=args.order, task=args.task, relevance_samples=args.relevance_samples, batch_size=args.batch_size,
        lr=args.lr, ema_decay=args.ema_decay, seed=args.seed,
        distill=str(Path(args.distill).resolve()) if args.distill else None, distill_samples=args.distill_samples,
    )
    run_compress(settings, args.out, args.budget, final_steps=args.final_steps, final_epochs=args.final_epochs,
                 device=args.device, benchmark_repeats=args.benchmark_repeats, pick=args.pick)
