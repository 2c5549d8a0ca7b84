"""Converters of public raw data files into fairchem LMDBs ``OUT/{train,val,test}/data.lmdb``.

One module per kind (``rmd17``, ``md22``, ``spice``, ``qm9``, ``qmof``, ``ase_files``), each with
``read(raw, **options) -> list[Atoms]`` (structures labelled through a single-point calculator, energy
in eV, forces in eV/Å) and ``split(raw, sizes) -> SplitSpec`` (JMP's split sizes). The target is
stored as fairchem's ``energy``, the forces as ``forces``; ``sid`` is the structure's index in the raw
file (for QM9: in the sorted file list). Every atom gets tag 2 (JMP's convention for non-catalysis
data, which JMP's ``qint_tags: [1, 2]`` needs), unless the raw structures carry tags of their own.
"""

from __future__ import annotations

import importlib
from pathlib import Path

#: kind -> module in fairchem_prune.datasets
KINDS = {"rmd17": "rmd17", "md22": "md22", "spice": "spice", "qm9": "qm9", "qmof": "qmof", "ase": "ase_files"}


def prepare_dataset(kind: str, raw: str | Path, out: str | Path, seed: int = 42, train_size: int | None = None,
                    val_size: int | None = None, test_size: int | None = None, force: bool = False,
                    **options) -> dict[str, int]:
    """Convert the raw file(s) ``raw`` of ``kind`` and write the split LMDBs under ``out``.
    ``options`` go to the converter's ``read`` (e.g. ``target``, ``subset``). Returns the split sizes."""
    from fairchem_prune.datasets.raw import with_jmp_tags
    from fairchem_prune.datasets.writing import write_splits

    module = importlib.import_module(f"fairchem_prune.datasets.{KINDS[kind]}")
    sizes = {"train": train_size, "val": val_size, "test": test_size}
    structures = [with_jmp_tags(atoms) for atoms in module.read(raw, **options)]
    spec = module.split(raw, sizes)
    forces = all("forces" in atoms.calc.results for atoms in structures)
    return write_splits(structures, out, spec, seed, sizes, source=str(raw), forces=forces, force=force)
