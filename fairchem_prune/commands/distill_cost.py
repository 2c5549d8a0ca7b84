"""``fairchem-prune distill-cost`` / ``tools/distill_cost.py``."""

from __future__ import annotations

import argparse
import json

DESCRIPTION = ("cost per training step of each distillation option (rattle, teacher MD, Jacobian rows, per-atom "
               "energies) against the distillation config's own, measured side by side on its first batch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="a trainer: distill config, e.g. configs/s2ef/distill_4b.yml")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per option (median; default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--options", metavar="JSON",
                        help='the options to time, as JSON {"name": {task.distill key: value}}, the first the reference '
                             '(default: the config, rattle, teacher MD, Jacobian rows, per-atom energies)')
    parser.add_argument("--out", default="distill_cost.json", help="JSON output (default: distill_cost.json)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    parser.add_argument("--log", help="fairchem's messages while the trainer is built, its config dump among them "
                                      "(default: --out with .log)")
    parser.add_argument("overrides", nargs="*",
                        help="after --: fairchem overrides, e.g. -- --task.distill.teacher_checkpoint=T.pt "
                             "--dataset.train.src=DATA --optim.batch_size=8")


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    import torch

    from fairchem_prune.console import chatter_to
    from fairchem_prune.distill_cost import format_table, measure_options
    from fairchem_prune.errors import PruneError
    from fairchem_prune.files import atomic_path, refuse_existing

    if not Path(args.config).is_file():
        raise PruneError(f"--config {args.config}: no such file")
    out = Path(args.out)
    refuse_existing(out, args.force)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        options = json.loads(args.options) if args.options else None
    except json.JSONDecodeError as err:
        raise PruneError(f"--options is not JSON ({err})") from None
    with chatter_to(args.log or out.with_suffix(".log")):
        result = measure_options(args.config, args.overrides, options=options, repeats=args.repeats, warmup=args.warmup)
    print(format_table(result))
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
