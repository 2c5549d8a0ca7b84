"""SPICE (one HDF5 file, one group per molecule: ``atomic_numbers``, ``conformations`` in bohr,
``formation_energy`` and ``dft_total_energy`` in hartree, ``dft_total_gradient`` in hartree/bohr,
``subset``). JMP fine-tunes on the solvated amino acids and the dipeptides subsets, 80/10/10 by
conformation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms, units

from fairchem_prune.console import progress
from fairchem_prune.datasets.raw import field, labelled, require_file
from fairchem_prune.datasets.splits import SplitSpec
from fairchem_prune.errors import PruneError

SPLIT = SplitSpec(train=0.8, val=0.1, test=None)
#: --subset choice -> text in the groups' ``subset`` entry (case-insensitive)
SUBSETS = {"solvated_amino_acids": "solvated amino acids", "dipeptides": "dipeptides"}
ENERGIES = ("formation_energy", "dft_total_energy")


def read(raw: str | Path, subset: str = "solvated_amino_acids", target: str = "formation_energy") -> list[Atoms]:
    """Conformations of the molecules of ``subset``, positions in Å, ``target`` energy in eV and
    forces (= -``dft_total_gradient``) in eV/Å."""
    import h5py

    path = require_file(raw)
    if subset not in SUBSETS or target not in ENERGIES:
        raise PruneError(f"unknown SPICE subset {subset!r} or target {target!r}; choose from {list(SUBSETS)} and {list(ENERGIES)}")
    structures = []
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise PruneError(f"{path} is not a readable HDF5 file ({err})") from None
    with h5:
        for name in progress(sorted(h5), desc=f"reading {path.name}"):
            group, where = h5[name], f"{path}:{name}"
            if "subset" not in group:
                raise PruneError(f"{where}: key 'subset' is missing; is this a SPICE HDF5 file?")
            if SUBSETS[subset] not in _text(group["subset"][()]).lower():
                continue
            z = field(group, "atomic_numbers", where, (None,), dtype=np.int64)
            pos = field(group, "conformations", where, (None, len(z), 3)) * units.Bohr
            energy = field(group, target, where, (len(pos),)) * units.Hartree
            forces = -field(group, "dft_total_gradient", where, (len(pos), len(z), 3)) * (units.Hartree / units.Bohr)
            structures += [labelled(Atoms(numbers=z, positions=p), float(e), f) for p, e, f in zip(pos, energy, forces)]
    if not structures:
        raise PruneError(f"{path} holds no molecule of the subset '{SUBSETS[subset]}'; check --subset")
    return structures


def split(raw: str | Path, sizes: dict[str, int | None]) -> SplitSpec:
    return SPLIT


def _text(value) -> str:
    value = np.ravel(value)[0] if np.ndim(value) else value
    return value.decode() if isinstance(value, bytes) else str(value)
