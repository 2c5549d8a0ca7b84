"""``fairchem-prune compress`` / ``tools/compress.py``."""

from __future__ import annotations

import argparse

from fairchem_prune.blocks import count_list

DESCRIPTION = ("fine-tune every block count of a pre-trained checkpoint on a task, pick the fewest blocks (or, "
               "--pick fastest, the fastest by trustworthy measurements) within an accuracy budget of the full model "
               "and fine-tune it to the end")


def epochs_or_auto(text: str) -> int | str:
    """``--epochs``: a whole number of epochs, or ``auto``."""
    from fairchem_prune.compress.pipeline import AUTO

    if text == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of epochs or {AUTO}, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fairchem_prune.architectures import supported
    from fairchem_prune.compress.budget import PICKS
    from fairchem_prune.compress.pipeline import ORDERS

    parser.add_argument("--checkpoint", required=True, help=f"pre-trained fairchem checkpoint ({supported()}; a JMP "
                        "checkpoint converted by convert-jmp)")
    parser.add_argument("--task", required=True, nargs="+", metavar="YAML",
                        help="fairchem task config(s), merged in order: dataset (format, transforms), outputs, losses, "
                             "metrics, model keys (e.g. configs/finetune/tasks/rmd17_aspirin.yml)")
    parser.add_argument("--train", required=True, help="training LMDB file or folder")
    parser.add_argument("--val", required=True, help="validation LMDB file or folder (the budget is judged on it)")
    parser.add_argument("--budget", required=True, help="allowed validation error above the full model's: relative (5%%) "
                        "or absolute with a unit (2meV/A, 10meV)")
    parser.add_argument("--pick", choices=PICKS, default="fewest",
                        help="which candidate within the budget: fewest blocks (default), or fastest: the highest "
                             "measured throughput whose benchmark figure is not flagged (where every one is flagged, "
                             "fewest, and the report says so); another --pick re-picks from the recorded runs")
    parser.add_argument("--out", required=True, help="working folder; finished steps in it are skipped on a re-run")
    parser.add_argument("--epochs", type=epochs_or_auto, default=5,
                        help="fine-tuning epochs of every candidate, or auto: the recipe's schedule until the validation "
                             "error improves by less than 5%% over the last 20%% of the epochs (optim.plateau; the "
                             "recipe's max_epochs the cap) (default: 5)")
    parser.add_argument("--final-epochs", type=int, help="epochs of the pick's final fine-tune (default: the recipe's / "
                        "task's max_epochs; with --epochs auto, until its plateau)")
    parser.add_argument("--blocks", type=count_list, help="block counts to try, e.g. 5,4,3 (default: every count below the checkpoint's)")
    parser.add_argument("--order", choices=ORDERS, default="relevance",
                        help="which blocks a k-block candidate keeps: the k most relevant by GradCAM (default) or the first k")
    parser.add_argument("--relevance-samples", type=int, default=200, help="training structures the relevance is computed on")
    parser.add_argument("--distill", metavar="LMDB", help="pre-training structures: also try each count distilled from the full model on them")
    parser.add_argument("--distill-samples", type=int, help="structures each distillation sees (default: one pass over --distill)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the relevance subset and the distillation order")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--workers", type=int, default=1, help="local training runs at a time (single-threaded each when > 1)")
    parser.add_argument("--submit", action="store_true", help="submit the runs to Slurm through fairchem's submitit "
                        "launcher; re-run the same command to follow them and go on")
    parser.add_argument("fairchem_args", nargs=argparse.REMAINDER,
                        help="after --: arguments passed to every fairchem run (e.g. -- --slurm-partition P --num-gpus 1)")


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from fairchem_prune.compress.pipeline import CompressSettings, run_compress

    def absolute(path: str | None) -> str | None:  # settings.json compares the files, wherever it is run from
        return str(Path(path).resolve()) if path else None

    settings = CompressSettings(
        checkpoint=absolute(args.checkpoint), tasks=[absolute(t) for t in args.task], train=absolute(args.train),
        val=absolute(args.val), epochs=args.epochs, blocks=args.blocks, order=args.order, distill=absolute(args.distill),
        distill_samples=args.distill_samples, relevance_samples=args.relevance_samples, seed=args.seed,
    )
    passthrough = args.fairchem_args[1:] if args.fairchem_args[:1] == ["--"] else args.fairchem_args
    run_compress(settings, args.out, args.budget, final_epochs=args.final_epochs, device=args.device,
                 workers=args.workers, submit=args.submit, fairchem_args=passthrough, pick=args.pick)
