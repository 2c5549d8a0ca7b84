"""``fairchem-prune prepare-dataset`` / ``tools/prepare_dataset.py``."""

from __future__ import annotations

import argparse

DESCRIPTION = "convert raw downstream data (rMD17, MD22, SPICE, QM9, QMOF, any ASE file) into fairchem LMDBs"

#: kind -> (help, {option: (default, help)}) of the converter-specific options
KIND_OPTIONS = {
    "rmd17": ("rMD17 .npz of one molecule (kcal/mol)", {}),
    "md22": ("MD22 .npz of one molecule (kcal/mol)", {}),
    "spice": ("SPICE HDF5 file", {
        "subset": ("solvated_amino_acids", "solvated_amino_acids or dipeptides"),
        "target": ("formation_energy", "formation_energy or dft_total_energy (hartree -> eV)"),
    }),
    "qm9": ("folder of QM9 dsgdb9nsd_*.xyz files or the .tar.bz2", {
        "target": ("U0", "A B C mu alpha homo lumo gap r2 zpve U0 U H G Cv (energies -> eV)"),
    }),
    "qmof": ("folder with qmof.json and qmof_structure_data.json (or the path of qmof.json)", {
        "target": ("outputs.pbe.bandgap", "dotted path of the target in each qmof.json entry"),
    }),
    "ase": ("any file ASE reads (extxyz, traj, db)", {
        "target": ("energy", "energy (with forces where present) or an atoms.info key"),
    }),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, (help_text, options) in KIND_OPTIONS.items():
        sub = kinds.add_parser(kind, help=help_text, description=f"{DESCRIPTION}: {help_text}")
        sub.add_argument("--raw", required=True, help=help_text)
        sub.add_argument("--out", required=True, help="output folder: OUT/{train,val,test}/data.lmdb")
        sub.add_argument("--seed", type=int, default=42, help="seed of the split permutation (default 42, as JMP)")
        for split in ("train", "val", "test"):
            sub.add_argument(f"--{split}-size", type=int, metavar="N", help=f"{split} structures (default: JMP's)")
        sub.add_argument("--force", action="store_true", help="overwrite existing LMDBs under --out")
        for option, (default, option_help) in options.items():
            sub.add_argument(f"--{option}", default=default, help=f"{option_help} (default {default})")


def run(args: argparse.Namespace) -> None:
    from fairchem_prune.datasets import prepare_dataset

    options = {option: getattr(args, option) for option in KIND_OPTIONS[args.kind][1]}
    sizes = prepare_dataset(args.kind, args.raw, args.out, seed=args.seed, train_size=args.train_size,
                            val_size=args.val_size, test_size=args.test_size, force=args.force, **options)
    print(f"{args.out}: " + ", ".join(f"{name} {count}" for name, count in sizes.items()))
