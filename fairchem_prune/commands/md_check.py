"""``fairchem-prune md-check`` / ``tools/md_check.py``."""

from __future__ import annotations

import argparse

DESCRIPTION = ("NVE molecular dynamics (ASE, OCPCalculator) of each model from the same structures and velocities: "
               "energy drift, time to instability, speed, and the distance histogram against the first model's")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH",
                        help="a model to run (repeatable; the first is the reference, e.g. the teacher)")
    parser.add_argument("--structures", required=True,
                        help="starting structures: a fairchem LMDB file or folder, or any file ASE reads (all frames)")
    parser.add_argument("--num-structures", type=int, default=2, help="the first N structures (default 2)")
    parser.add_argument("--steps", type=int, default=500, help="velocity-Verlet steps per run (default 500)")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    parser.add_argument("--temperature", type=float, default=300.0, help="K of the starting velocities (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starting velocities (default 0)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; on a busy machine 1 is often fastest)")
    parser.add_argument("--out", default="md_check.json", help="JSON output (default md_check.json)")
    parser.add_argument("--plot", help="PNG of the total energy against time (default: beside --out)")
    parser.add_argument("--log", help="file for fairchem's log messages (default: beside --out, .log)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")


def run(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    import torch

    from fairchem_prune.console import chatter_to
    from fairchem_prune.errors import PruneError
    from fairchem_prune.files import atomic_path, refuse_existing
    from fairchem_prune.md_check import MDSettings, check_models, format_table, plot_energies
    from fairchem_prune.md_models import checkpoint_calculators, read_structures

    out = Path(args.out)
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    log = Path(args.log) if args.log else out.with_suffix(".log")
    for path in (out, plot):
        refuse_existing(path, args.force)
    if len({out, plot, log}) < 3:
        raise PruneError(f"--out {out}, --plot {plot} and --log {log} must be different files")
    named = {}
    for spec in args.checkpoint:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise PruneError(f"--checkpoint {spec!r}: give NAME=PATH, e.g. teacher=demo_out/teacher.pt")
        named[name] = Path(path)
    if args.threads is not None:
        if args.threads < 1:
            raise PruneError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    structures = read_structures(args.structures, args.num_structures)
    factories, kinds = checkpoint_calculators(named, args.device, log)
    settings = MDSettings(steps=args.steps, timestep=args.timestep, temperature=args.temperature, seed=args.seed)
    if log.exists():
        log.unlink()
    with chatter_to(log):
        result = check_models(factories, structures, settings, kinds=kinds)
    result["threads"] = torch.get_num_threads()
    print(format_table(result))
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    plot_energies(result, plot)
    print(f"wrote {out} and {plot} (fairchem's log: {log})")
