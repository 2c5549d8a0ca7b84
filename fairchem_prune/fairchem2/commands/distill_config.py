"""``fairchem-prune distill-config`` beside fairchem-core 2.x."""

from __future__ import annotations

import argparse

from fairchem_prune.fairchem2.commands.finetune_config import add_run_arguments, write

DESCRIPTION = ("write a fairchem 2 config (for `fairchem -c`) that distils a sliced inference checkpoint from its "
               "full teacher on pre-training structures: teacher energies, forces and stress as targets, plus "
               "node-to-node L1 on the final node embeddings")

EPILOG = """\
example:
  python fairchem/src/fairchem/core/scripts/create_uma_finetune_dataset.py --train-dir pretrain_train \\
      --val-dir pretrain_val --uma-task omat --regression-tasks ef --base-model uma-s-1p1 --output-dir kd
  fairchem-prune slice --checkpoint uma-s-1p1.pt --num-blocks-kept 6 --output uma_6b.pt
  fairchem-prune distill-config --template kd/uma_sm_finetune_template.yaml --student uma_6b.pt \\
      --teacher uma-s-1p1.pt --output kd/uma_6b_distill.yaml --device cpu --steps 2000
  fairchem -c kd/uma_6b_distill.yaml

The template gives the data (its data/ YAML: the structures' dataset name, e.g. omat, must be one of the
teacher's), the batching, the schedule and the callbacks; the tasks are the teacher's own (its
normalisers and element references, with which the student's heads were trained), so the structures
need no labels. Every step fits the student to the teacher's predictions with fairchem's own task
losses and adds --n2n-weight x the node-to-node L1; validation scores the student against the teacher.
The student keeps its own heads. The run is <run dir>/<run id>/ as for finetune-config: the distilled
student is checkpoints/final/inference_ckpt.pt (a plain inference checkpoint: load_predict_unit,
FAIRChemCalculator, finetune-config), and fairchem -c on the same config again resumes; --scheduler
slurm submits it to Slurm, as for finetune-config."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--template", required=True,
                        help="uma_sm_finetune_template.yaml written by create_uma_finetune_dataset.py for the "
                             "distillation structures (its data/ folder beside it)")
    parser.add_argument("--student", required=True,
                        help="fairchem 2 inference checkpoint to distil (e.g. from fairchem-prune slice)")
    parser.add_argument("--teacher", required=True,
                        help="the full model's fairchem 2 inference checkpoint (frozen; its EMA weights)")
    parser.add_argument("--n2n-weight", type=float, default=1.0,
                        help="coefficient of the node-to-node L1 term (default 1; 0: the teacher's targets only)")
    parser.add_argument("--node-irreps", choices=("scalars", "all"), default="scalars",
                        help="node embedding rows matched: scalars (l = 0, what the energy heads read; default) "
                             "or all (every l)")
    length = add_run_arguments(parser)
    length.add_argument("--samples", type=int, metavar="N",
                        help="the budget in structures: N / batch size steps (as the 1.x trainer's max_samples)")
    parser.add_argument("--sampling", choices=("proportional", "uniform", "temperature"),
                        help="how the template's datasets are drawn: in proportion to their sizes, equally, or to "
                             "size^(1/T) (default: as the template says)")
    parser.add_argument("--temperature", type=float, default=2.0, metavar="T",
                        help="T of --sampling temperature (default 2; 1 is proportional)")
    more = parser.add_argument_group("teacher-labelled structures (each training batch; the teacher labels them)")
    more.add_argument("--rattle-fraction", type=float, default=0.0, metavar="F",
                      help="share of the structures whose free atoms get Gaussian noise (default 0)")
    more.add_argument("--rattle-sigma", type=float, default=0.05, metavar="A", help="its standard deviation, Å (default 0.05)")
    more.add_argument("--md-fraction", type=float, default=0.0, metavar="F",
                      help="share replaced by the last frame of a short MD under the teacher's forces (default 0)")
    more.add_argument("--md-steps", type=int, default=5, help="velocity-Verlet steps of that MD (default 5)")
    more.add_argument("--md-timestep", type=float, default=1.0, metavar="FS", help="its time step, fs (default 1)")
    more.add_argument("--md-temperature", type=float, default=300.0, metavar="K",
                      help="temperature of its starting velocities, K (default 300)")
    more.add_argument("--seed", type=int, default=0, help="seed of the rattle and MD draws (default 0)")


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from fairchem_prune.fairchem2.checkpoints import resolve_path
    from fairchem_prune.augmentation import Augmentation
    from fairchem_prune.fairchem2.distill import DistillSettings

    teacher = resolve_path(args.teacher)
    augmentation = Augmentation(rattle_fraction=args.rattle_fraction, rattle_sigma=args.rattle_sigma,
                                md_fraction=args.md_fraction, md_steps=args.md_steps, md_timestep=args.md_timestep,
                                md_temperature=args.md_temperature)
    write(args, args.student, f"distils, from {Path(teacher).resolve()},",
          distill=DistillSettings(teacher=teacher, n2n_weight=args.n2n_weight, node_irreps=args.node_irreps,
                                  samples=args.samples, sampling=args.sampling, temperature=args.temperature,
                                  augmentation=augmentation, seed=args.seed))
