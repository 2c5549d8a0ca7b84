"""``fairchem-prune md-check`` beside fairchem-core 2.x."""

from __future__ import annotations

import argparse

DESCRIPTION = ("NVE molecular dynamics (ASE, fairchem's FAIRChemCalculator) of each fairchem 2 checkpoint from the same "
               "structures and velocities: energy drift, time to instability, speed, and the distance histogram "
               "against the first model's")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH",
                        help="a fairchem 2 inference checkpoint to run (repeatable; the first is the reference, e.g. "
                             "the original model)")
    parser.add_argument("--task", required=True,
                        help="the task (dataset) the models predict for: UMA's omol, omat, oc20, oc22, oc25, odac, omc")
    parser.add_argument("--structures", required=True,
                        help="starting structures: any file ASE reads (all frames), an ASE .db, or an ASE-LMDB data "
                             "set (.aselmdb file or folder); charge and spin from atoms.info")
    parser.add_argument("--num-structures", type=int, default=2, help="the first N structures (default 2)")
    parser.add_argument("--charge", type=int, default=None,
                        help="total charge of structures without info['charge'] (default 0, as FAIRChemCalculator)")
    parser.add_argument("--spin", type=int, default=None,
                        help="spin multiplicity of structures without info['spin'] (default: 1 for omol, else 0, as "
                             "FAIRChemCalculator)")
    parser.add_argument("--steps", type=int, default=500, help="velocity-Verlet steps per run (default 500)")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    parser.add_argument("--temperature", type=float, default=300.0, help="K of the starting velocities (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starting velocities (default 0)")
    parser.add_argument("--inference-settings", choices=("batch", "merged"), default="batch",
                        help="batch: fairchem's InferenceSettings() (experts not merged, no compile); merged: "
                             "merge_mole, no compile (faster; fairchem reloads the unmerged model when the system "
                             "changes)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", default="md_check.json", help="JSON output (default md_check.json)")
    parser.add_argument("--plot", help="PNG of the total energy against time (default: beside --out)")
    parser.add_argument("--log", help="file for fairchem's log messages (default: beside --out, .log)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")


def run(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from fairchem_prune.errors import PruneError, require_device
    from fairchem_prune.files import atomic_path, refuse_existing
    from fairchem_prune.md_check import MDSettings, check_models, format_table, plot_energies

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
            raise PruneError(f"--checkpoint {spec!r}: give NAME=PATH, e.g. uma=uma-s-1p2.pt")
        if name in named:
            raise PruneError(f"--checkpoint {spec!r}: the name {name} is given twice")
        named[name] = Path(path)
    require_device(args.device)
    from fairchem_prune.console import chatter_to
    from fairchem_prune.fairchem2.calculators import checkpoint_calculators
    from fairchem_prune.fairchem2.data import read_structures

    structures = read_structures(args.structures, args.num_structures, task=args.task, charge=args.charge,
                                 spin=args.spin)
    factories, kinds = checkpoint_calculators(named, args.task, args.inference_settings, args.device)
    settings = MDSettings(steps=args.steps, timestep=args.timestep, temperature=args.temperature, seed=args.seed)
    if log.exists():
        log.unlink()
    with chatter_to(log):
        result = check_models(factories, structures, settings, kinds=kinds)
    result["task"], result["inference_settings"] = args.task, args.inference_settings
    print(format_table(result))
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    plot_energies(result, plot)
    print(f"wrote {out} and {plot} (fairchem's log: {log})")
