"""Molecular-dynamics trajectories stored as ``.npz`` (rMD17, MD22): one molecule, many frames,
energies and forces in kcal/mol and kcal/mol/Å, positions in Å."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms, units

from fairchem_prune.datasets.raw import field, labelled, require_file
from fairchem_prune.errors import PruneError

#: 1 kcal/mol in eV (ASE's CODATA constants): 0.0433641...
KCAL_MOL = units.kcal / units.mol


def read_md_npz(path: str | Path, numbers: str, positions: str, energies: str, forces: str) -> list[Atoms]:
    """The frames of ``path`` as molecules (no cell, no PBC) labelled with energy (eV) and forces
    (eV/Å), reading the arrays under the given keys: atomic numbers (n_atoms,), positions
    (n_frames, n_atoms, 3) Å, energies (n_frames,) or (n_frames, 1) kcal/mol, forces like positions
    in kcal/mol/Å."""
    path = require_file(path)
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as err:
        raise PruneError(f"{path} is not a readable .npz file ({err})") from None
    z = field(arrays, numbers, path, (None,), dtype=np.int64)
    pos = field(arrays, positions, path, (None, len(z), 3))
    energy = field(arrays, energies, path, (len(pos),) if np.ndim(arrays.get(energies)) == 1 else (len(pos), 1))
    force = field(arrays, forces, path, (len(pos), len(z), 3))
    energy, force = energy.reshape(-1) * KCAL_MOL, force * KCAL_MOL
    return [labelled(Atoms(numbers=z, positions=pos[i]), float(energy[i]), force[i]) for i in range(len(pos))]
