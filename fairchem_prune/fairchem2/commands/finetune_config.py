"""``fairchem-prune finetune-config`` beside fairchem-core 2.x."""

from __future__ import annotations

import argparse

DESCRIPTION = ("write a fairchem 2 fine-tuning config (for `fairchem -c`) of a sliced inference checkpoint, from "
               "the template that fairchem's create_uma_finetune_dataset.py wrote")

EPILOG = """\
example:
  python fairchem/src/fairchem/core/scripts/create_uma_finetune_dataset.py --train-dir train --val-dir val \\
      --uma-task omol --regression-tasks ef --base-model uma-s-1p1 --output-dir ft
  fairchem-prune slice --checkpoint uma-s-1p1.pt --num-blocks-kept 6 --output uma_6b.pt
  fairchem-prune finetune-config --template ft/uma_sm_finetune_template.yaml --checkpoint uma_6b.pt \\
      --output ft/uma_6b_finetune.yaml --device cpu --steps 200
  fairchem -c ft/uma_6b_finetune.yaml

The config keeps the template's data include (defaults: - data: ...; an output outside the template's
folder gets hydra.searchpath) and heads (fairchem's template trains a new MLP_EFS_Head on the kept
backbone). Its run is <run dir>/<run id>/: checkpoints/final/inference_ckpt.pt (the fine-tuned model,
for load_predict_unit / FAIRChemCalculator), logs/metrics.jsonl (train loss per step, validation
metrics per evaluation). Running fairchem -c on the same config again resumes from the newest
checkpoint of that folder (a finished run ends at once). With --scheduler slurm, fairchem -c submits the
run through fairchem's own Slurm launcher and returns; preempted, the job is requeued and resumes from
the newest checkpoint (every --checkpoint-every steps)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--template", required=True,
                        help="uma_sm_finetune_template.yaml written by create_uma_finetune_dataset.py (its data/ "
                             "folder beside it)")
    parser.add_argument("--checkpoint", required=True,
                        help="fairchem 2 inference checkpoint to fine-tune (e.g. from fairchem-prune slice)")
    parser.add_argument("--layer-decay", type=float, metavar="F",
                        help="layer-wise learning rates: lr x F^(b-1-i) in block i of b, x F^b before the first "
                             "block (embeddings, MoLE routing), x 1 for the final norm and heads (e.g. 0.8)")
    add_run_arguments(parser)


def add_run_arguments(parser: argparse.ArgumentParser):
    """The options of a training run's config (fine-tuning or distillation); returns the group of the
    run's length (``--epochs`` / ``--steps``), for more ways to give it."""
    parser.add_argument("--output", required=True, help="config to write (.yaml)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="train this many epochs (the template's default: 1)")
    length.add_argument("--steps", type=int, help="train this many optimizer steps instead of epochs")
    parser.add_argument("--batch-size", type=int, help="systems per batch (train and validation)")
    parser.add_argument("--lr", type=float, help="peak learning rate of the cosine schedule (template: 4e-4)")
    parser.add_argument("--ema-decay", type=float,
                        help="decay of the weight average that validation and inference_ckpt.pt use (fairchem: "
                             "0.999; short runs want less, e.g. 0.9)")
    parser.add_argument("--evaluate-every", type=int, metavar="N",
                        help="validate every N steps (template: 100; also at every epoch's end)")
    parser.add_argument("--checkpoint-every", type=int, metavar="N",
                        help="save a resumable checkpoint every N steps (template: 1000); a preempted Slurm job "
                             "resumes from the newest one")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="job.device_type (template: cuda)")
    parser.add_argument("--run-dir", help="folder of fairchem's runs (template's job.run_dir, e.g. /tmp/uma_finetune_runs)")
    parser.add_argument("--run-id", help="run folder name under --run-dir (job.timestamp_id; default: --output's stem)")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    slurm = parser.add_argument_group("Slurm (fairchem's own launcher: fairchem -c submits the run through submitit; "
                                      "preempted or sent USR2, it is requeued and resumes from its newest checkpoint, "
                                      "--checkpoint-every)")
    slurm.add_argument("--scheduler", choices=["local", "slurm"],
                       help="slurm: fairchem -c submits the run (job.scheduler.mode SLURM); local or unset: the "
                            "template's scheduler (fairchem's writes local); the --slurm-* options need slurm")
    slurm.add_argument("--slurm-partition", metavar="P", help="partition (default: the cluster's default)")
    slurm.add_argument("--slurm-mem-gb", type=int, metavar="N", help="memory per node, GB (fairchem's default: 80)")
    slurm.add_argument("--slurm-timeout-hr", type=int, metavar="H", help="time limit, hours (fairchem's default: 168)")
    slurm.add_argument("--slurm-cpus", type=int, metavar="N", help="CPUs per rank (cpus_per_task; fairchem's default: 8)")
    return length


def run(args: argparse.Namespace) -> None:
    write(args, args.checkpoint, "fine-tunes", layer_decay=args.layer_decay)


def slurm_settings(args: argparse.Namespace) -> dict | None:
    """The ``job.scheduler.slurm`` fields of the --slurm-* options (None without --scheduler slurm)."""
    from fairchem_prune.errors import PruneError
    from fairchem_prune.fairchem2.finetune import SLURM_FIELDS

    given = {key: getattr(args, option[2:].replace("-", "_")) for key, option in SLURM_FIELDS.items()}
    if args.scheduler != "slurm":
        named = [SLURM_FIELDS[key] for key, value in given.items() if value is not None]
        if named:
            raise PruneError(f"{', '.join(named)} {'needs' if len(named) == 1 else 'need'} --scheduler slurm")
        return None
    return given


def write(args: argparse.Namespace, checkpoint: str, what: str, **settings) -> None:
    """Write the config of ``args`` (:func:`add_run_arguments`) for ``checkpoint``, and say how to run it."""
    import warnings

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # torchtnt's import, not the user's
    from pathlib import Path

    from fairchem_prune.fairchem2.finetune import data_sources, write_finetune_config

    slurm = slurm_settings(args)
    paths = write_finetune_config(
        args.template, checkpoint, args.output, epochs=args.epochs, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, device=args.device, run_dir=args.run_dir, run_id=args.run_id,
        ema_decay=args.ema_decay, evaluate_every_n_steps=args.evaluate_every,
        checkpoint_every_n_steps=args.checkpoint_every, slurm=slurm, force=args.force,
        **settings,
    )
    print(f"wrote {args.output} ({what} {Path(checkpoint).resolve()})")
    print(f"run:           fairchem -c {args.output}" + ("   (submits a Slurm job; it resumes by itself after a "
                                                          "preemption)" if slurm is not None else ""))
    print(f"trained model: {paths.final_checkpoint}")
    print(f"metrics:       {paths.metrics}")
    missing = [src for src in data_sources(args.template) if not Path(src).exists()]
    if missing:
        print(f"note: the data YAML's {', '.join(missing)} do not exist from this folder; run fairchem -c where "
              "they do (create_uma_finetune_dataset.py writes paths relative to where it ran)")
